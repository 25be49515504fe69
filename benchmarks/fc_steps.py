#!/usr/bin/env python
"""Adaptive against fixed steps on a depth-3 fully connected net (Theorem 1).

    python benchmarks/fc_steps.py                 # 10^5 steps, (N, D) = (16, 32), seed 0
    python benchmarks/fc_steps.py --steps 1000000 --seed 3

One dataset (``gaussian_dataset(N, D, seed)``, the paper's setting: no tuning), one
initialization, and ``fastbias.fit(arch="fc", depth=3)`` run twice from it:

* ``step="adaptive"``: the certified step ``eta_t = c / (L(w_t) S(w_t))`` (c = 1);
* ``step="fixed"``: a constant ``eta`` equal to the adaptive run's first step, the
  largest that the certificate grants at the start (a larger constant step is not
  certified there; it stays stable only while the loss is large).

Both directions are compared with the hard-margin SVM ``theory.max_margin(X, y,
"l2")``, which Theorem 1 says GD converges to: 1 - cos(beta_t, beta_SVM) at log-spaced
steps, and the normalized margin. With a fixed step the loss, and with it the
gradient, decays like 1/t, so the direction moves ever more slowly; the adaptive step
grows as 1/L and keeps it moving.
"""

import argparse
import time

import numpy as np

import fastbias
from fastbias import theory
from fastbias.data import gaussian_dataset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10**5)
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--D", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    X, y = gaussian_dataset(args.N, args.D, seed=args.seed)
    svm = theory.max_margin(X, y, "l2").beta
    refs = {"svm": svm}
    t0 = time.perf_counter()
    ada = fastbias.fit(X, y, arch="fc", depth=3, steps=args.steps, seed=args.seed, references=refs)
    t_ada = time.perf_counter() - t0
    eta = float(ada.history["step_size"][1])  # the first (certified) step
    t0 = time.perf_counter()
    fix = fastbias.fit(X, y, arch="fc", depth=3, steps=args.steps, step="fixed", step_size=eta, seed=args.seed,
                       references=refs)
    t_fix = time.perf_counter() - t0
    gamma = 1.0 / np.linalg.norm(svm)  # the SVM's normalized margin
    print(f"# fc depth 3, gaussian_dataset({args.N}, {args.D}, seed={args.seed}), {args.steps} steps "
          f"(adaptive c = 1: {t_ada:.1f} s; fixed eta = {eta:.3g}: {t_fix:.1f} s)")
    print()
    print("| step | 1 − cos, adaptive | 1 − cos, fixed | margin / SVM's, adaptive | margin / SVM's, fixed |")
    print("|---:|---:|---:|---:|---:|")
    ha, hf = ada.history, fix.history
    for k in [10**j for j in range(1, 10) if 10**j < args.steps] + [args.steps]:
        ia = int(np.searchsorted(ha["step"], k))
        jf = int(np.searchsorted(hf["step"], k))
        print(f"| {k:,} | {1 - ha['cos_svm'][ia]:.3g} | {1 - hf['cos_svm'][jf]:.3g} | "
              f"{ha['normalized_margin'][ia] / gamma:.4f} | {hf['normalized_margin'][jf] / gamma:.4f} |")
    print()
    print(f"status: adaptive {ada.status} (halvings {ada.halvings}), fixed {fix.status}; "
          f"log L at the end: adaptive {ada.log_loss:.4g}, fixed {fix.log_loss:.4g}")


if __name__ == "__main__":
    main()
