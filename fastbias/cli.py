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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastbias", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="print P, its JVP/VJP and the frequency-domain check for a small conv net")
    demo.add_argument("--dim", type=int, default=8)
    demo.add_argument("--depth", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    if args.command == "demo" and (args.dim < 1 or args.depth < 1):
        parser.error("--dim and --depth must be >= 1")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
