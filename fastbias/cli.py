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


def _error(exc):
    print(f"fastbias: error: {exc}", file=sys.stderr)
    return 2


def _sweep(args):
    from . import sweep

    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    try:
        spec = sweep.load_spec(args.spec)
        say(f"fastbias sweep: {len(spec)} runs from {args.spec} -> {args.out}")
        res = sweep.run_sweep(spec, args.out, dask=args.dask, workers=args.workers, progress=not args.quiet, log=say)
    except (sweep.SpecError, ValueError, TypeError, RuntimeError, OSError) as exc:
        return _error(exc)
    wall = res["wall_seconds"]
    rate = (f"{res['ran'] / wall:.3g} runs/s, {res['steps'] / wall:.3g} run-iterations/s"
            if res["ran"] and wall > 0 else "nothing left to run")
    print(f"{res['ran']} runs in {wall:.1f} s ({rate}); {res['skipped']} finished before; "
          f"{res['runs']} rows in {res['summary']}")
    return 0


def _int_list(text):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _record(text):
    return text if text in ("log", "last") else int(text)


def _run(args):
    import json

    from . import sweep

    config = {"arch": args.arch, "steps": args.steps, "data": args.data, "seed": args.seed, "loss": args.loss,
              "step": args.step, "record": args.record, "theory": not args.no_theory,
              "stationary": args.stationary}
    for key in ("depth", "n", "d", "width", "widths", "step_size", "init_scale"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    try:
        row, _ = sweep.run_one(config, out=args.out, progress=not args.quiet)
    except (sweep.SpecError, ValueError, TypeError) as exc:
        return _error(str(exc).replace("spec key ", "option "))
    row.pop("id", None)
    print(json.dumps(row, indent=1, allow_nan=True))
    if not args.quiet:
        print(f"history: {args.out}", file=sys.stderr)
    return 0


def _plot(args):
    from . import sweep

    try:
        paths = sweep.plot_sweep(args.dir, progress=not args.quiet)
    except (OSError, ValueError) as exc:
        return _error(exc)
    for p in paths:
        print(p)
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
    swp = sub.add_parser("sweep", help="run a grid of GD runs from a TOML spec into a results folder "
                                       "(resumable: run the same command again to continue)")
    swp.add_argument("spec", help="the spec file: a [sweep] table whose list-valued keys form the grid")
    swp.add_argument("--out", required=True, help="results folder (summary.parquet, runs/, ...)")
    swp.add_argument("--dask", metavar="local|ADDRESS",
                     help="run on Dask: 'local' starts a LocalCluster, tcp://host:port uses a running scheduler")
    swp.add_argument("--workers", type=int, help="worker processes (default: the CPUs available)")
    swp.add_argument("--quiet", action="store_true", help="no progress bar or notes")
    swp.set_defaults(func=_sweep)
    one = sub.add_parser("run", help="one GD run: prints its summary as JSON and saves its history (.npz)")
    one.add_argument("--arch", required=True, choices=("linear", "fc", "diag", "conv"))
    one.add_argument("--depth", type=int, help="layers L (default 1 for linear, 2 otherwise)")
    one.add_argument("--data", default="gaussian",
                     help="'gaussian' (N(0,1) X, labels of a Gaussian teacher, from --seed) or an .npz with X, y")
    one.add_argument("--n", type=int, help="samples (gaussian data)")
    one.add_argument("--d", type=int, help="features (gaussian data)")
    one.add_argument("--seed", type=int, default=0, help="seed of the data and the initialization")
    one.add_argument("--steps", type=int, required=True)
    one.add_argument("--loss", default="exp", choices=("exp", "logistic"))
    one.add_argument("--step", default="adaptive", choices=("adaptive", "fixed"))
    one.add_argument("--step-size", dest="step_size", type=float,
                     help="eta for --step fixed; the factor c < 2 of the adaptive step (default 1)")
    one.add_argument("--init-scale", dest="init_scale", type=float, help="initial weights' std (default 1/sqrt(d))")
    widths = one.add_mutually_exclusive_group()
    widths.add_argument("--width", type=int, help="fc: every hidden layer's width")
    widths.add_argument("--widths", type=_int_list, help="fc: the hidden widths, comma-separated")
    one.add_argument("--record", type=_record, default="log", help="log (default), last, or every K steps")
    one.add_argument("--no-theory", action="store_true", help="skip the comparison with fastbias.theory")
    one.add_argument("--stationary", action="store_true",
                     help="depth > 2 conv/diag: also find the stationary point of eq. (10) nearest beta_T")
    one.add_argument("--out", default="fastbias-run.npz", help="history file (default: ./fastbias-run.npz)")
    one.add_argument("--quiet", action="store_true", help="no progress bar")
    one.set_defaults(func=_run)
    plt = sub.add_parser("plot", help="the standard figures of a finished sweep: fig_convergence.png, fig_final.png")
    plt.add_argument("dir", help="the sweep's results folder")
    plt.add_argument("--quiet", action="store_true", help="no progress bar")
    plt.set_defaults(func=_plot)
    args = parser.parse_args(argv)
    if args.command == "demo" and (args.dim < 1 or args.depth < 1):
        parser.error("--dim and --depth must be >= 1")
    if args.command == "paper" and args.seed < 0:
        parser.error("--seed must be >= 0")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
