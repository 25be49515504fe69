"""The ``fastbias`` command."""

import argparse
import sys


def _demo(args):
    import numpy as np

    from . import kernels as K

    rng = np.random.default_rng(args.seed)
    D, L = args.dim, args.depth
    ws = rng.standard_normal((L, D))
    dws = rng.standard_normal((L, D))
    g = rng.standard_normal(D)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    print(f"fastbias {__import__('fastbias').__version__}: conv net, depth L={L}, dimension D={D}, seed {args.seed}")
    beta = K.pconv(ws)
    print("\nbeta = P_conv(w) =", beta)
    # f_w(x) = <x, beta>: evaluate the network of eqs. (2)-(3) literally, layer by layer
    x = rng.standard_normal(D)
    h = x
    for l in range(L - 1):
        h = K.xcorr(h, ws[l])
    print(f"\nnetwork output f_w(x) = {h @ ws[-1]:.12g}   <x, beta> = {x @ beta:.12g}")
    jvp = K.pconv_jvp(ws, dws)
    vjp = K.pconv_vjp(ws, g)
    print("\nJVP dP(w)[dw] =", jvp)
    print("VJP dP(w)^T g =\n", vjp)
    print(f"\nadjoint identity: <JVP, g> = {jvp @ g:.12g}   <dw, VJP> = {np.sum(dws * vjp):.12g}")
    # frequency domain, the paper's unitary DFT: beta_hat = D^{(L-1)/2} prod_l w_hat_l
    hat = lambda z: np.fft.fft(z, axis=-1) / np.sqrt(D)
    lhs = hat(beta)
    rhs = D ** ((L - 1) / 2) * np.prod(hat(ws), axis=0)
    err = np.max(np.abs(lhs - rhs)) / np.max(np.abs(lhs))
    print(f"\nfrequency domain: max|beta_hat - D^((L-1)/2) prod_l w_hat_l| / max|beta_hat| = {err:.2e}")
    for backend in K.BACKENDS:
        diff = np.max(np.abs(K.pconv(ws, backend=backend) - beta)) / np.max(np.abs(beta))
        print(f"backend {backend:6s}: relative difference to auto = {diff:.2e}")
    return 0


def _paper(args):
    import time

    from . import paper

    kind = "smoke" if args.smoke else ("quick" if args.quick else "full")
    cfg = paper.config(kind, seed=args.seed)
    out = args.out
    t0 = time.perf_counter()
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    say(f"fastbias paper ({kind}, seed {args.seed}): {len(cfg.datasets)} datasets x {len(cfg.init_seeds)} "
        f"initializations x {len(cfg.steps)} architectures/depths -> {out}")
    report = paper.run_paper(cfg, out, progress=not args.quiet, log=say)
    print(paper.claims_table(report), end="")
    n = len(report["claims"])
    ok = sum(c["passed"] for c in report["claims"])
    print(f"\n{ok}/{n} claims passed; report: {out}/report.md, {out}/report.json "
          f"({time.perf_counter() - t0:.0f} s)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastbias", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="print P, its JVP/VJP and the frequency-domain check for a small conv net")
    demo.add_argument("--dim", type=int, default=8)
    demo.add_argument("--depth", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    pap = sub.add_parser("paper", help="reproduce the paper's claims: GD on every architecture and depth, "
                                       "compared with the theory; writes report.json, report.md and figures")
    size = pap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer datasets and steps (about 2 minutes)")
    size.add_argument("--smoke", action="store_true", help="a seconds-long pass through every code path "
                                                           "(tiny sizes; its numbers confirm nothing)")
    pap.add_argument("--out", default="fastbias-paper", help="output folder (default: ./fastbias-paper)")
    pap.add_argument("--seed", type=int, default=0, help="seed of the datasets and initializations (default 0)")
    pap.add_argument("--quiet", action="store_true", help="no progress bar or notes; print only the claims table")
    pap.set_defaults(func=_paper)
    args = parser.parse_args(argv)
    if args.command == "demo" and (args.dim < 1 or args.depth < 1):
        parser.error("--dim and --depth must be >= 1")
    if args.command == "paper" and args.seed < 0:
        parser.error("--seed must be >= 0")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
