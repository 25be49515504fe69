#!/usr/bin/env python
"""Same-process timing ratios of the fastbias kernels against plain NumPy.

    python benchmarks/kernel_ratios.py            # D in 16..4096, L in {2, 4}
    python benchmarks/kernel_ratios.py --quick    # fewer sizes and repeats, < 30 s
    python benchmarks/kernel_ratios.py --sizes 16,32,64,128 --depths 2

On a shared machine absolute times drift, so every variant of one case (one op,
D, L) is timed in the same process, interleaved: each repeat takes one sample of
every variant, in a rotated order, and a variant's time is the minimum over the
repeats of (sample time / inner calls), with enough inner calls for a sample to
last ``--sample-ms``. Everything is compiled (and FFTW planned) before timing.

Printed (Markdown): per case the microseconds per call of the plain NumPy
evaluation (``bench_kernels.pconv_numpy`` and friends), of each raw jitted variant
on batched (1, L, D) arrays, and of the public wrapper (``backend="auto"``); the
ratios numpy / variant (> 1: faster than NumPy); the wrapper overhead (public
minus the raw kernel it dispatches to); the fastest conv variant per D with the
crossovers that ``choose_backend`` should use; and the issue's targets.
"""

import argparse
import gc
import math
import os
import statistics
import sys
import time

if __name__ == "__main__":
    # The kernels run on one thread; so does NumPy's BLAS here (pfull's matvecs),
    # unless the caller says otherwise. Must be set before NumPy is imported (and
    # only when run as a script: asv imports this module too).
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

try:
    from . import bench_kernels as bk
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import bench_kernels as bk

import fastbias.kernels as K  # noqa: E402

CONV_VARIANTS = ("direct", "rfft", "fftw")


# --------------------------------------------------------------------------- timing


def _sample(fn, n, clock=time.perf_counter):
    t0 = clock()
    for _ in range(n):
        fn()
    return clock() - t0


def _inner_calls(fn, min_sample_s):
    """The number of calls for one sample to last at least ``min_sample_s``."""
    n = 1
    while True:
        t = _sample(fn, n)
        if t >= min_sample_s:
            return n
        n = max(n + 1, int(n * min(10.0, 1.2 * min_sample_s / max(t, 1e-9))))


def measure(calls, repeats, min_sample_s):
    """{variant: seconds per call}: min over ``repeats`` interleaved samples."""
    names = list(calls)
    for fn in calls.values():  # compile / plan, then a second call for the caches
        fn()
        fn()
    inner = {v: _inner_calls(calls[v], min_sample_s) for v in names}
    best = dict.fromkeys(names, math.inf)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            k = r % len(names)
            for v in names[k:] + names[:k]:
                best[v] = min(best[v], _sample(calls[v], inner[v]) / inner[v])
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


# --------------------------------------------------------------------------- checks


def _check_same_results(kind, op, D, L):
    """Every variant computes the same thing as the NumPy evaluation (the ratios
    would be meaningless otherwise); correctness itself is tested in tests/."""
    calls = {"conv": bk.conv_calls, "diag": bk.diag_calls, "full": bk.full_calls}[kind](op, D, L)
    ref = calls.pop("numpy")()
    for v, fn in calls.items():
        got = fn()
        if kind == "full" and op == "pfull_vjp":
            got = got[0] if v == "numba" else np.concatenate([a.ravel() for a in got])
            ref_flat = np.concatenate([a.ravel() for a in ref])
            np.testing.assert_allclose(np.ravel(got), ref_flat, rtol=1e-8, atol=1e-8 * D, err_msg=f"{op} {v}")
        else:
            np.testing.assert_allclose(np.ravel(got), np.ravel(ref), rtol=1e-8, atol=1e-8 * D, err_msg=f"{op} {v}")


# --------------------------------------------------------------------------- report


def _us(t):
    if t is None:
        return "—"
    us = t * 1e6
    return f"{us:.3g}" if us < 100 else f"{us:,.0f}"


def _ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}"


def _crossover(sizes, t_small, t_large):
    """Where ``t_large`` (the variant meant for large D) first beats ``t_small``: the
    D at which their time ratio crosses 1, by log-log interpolation between adjacent
    sizes. Returns (D or None, how it was found)."""
    logr = [math.log(t_small[D] / t_large[D]) for D in sizes]
    if logr[0] >= 0:
        return None, f"at or below D={sizes[0]} (the smallest size measured)"
    for (D0, r0), (D1, r1) in zip(zip(sizes, logr), zip(sizes[1:], logr[1:])):
        if r0 < 0 <= r1:
            x = math.log(D0) + (math.log(D1) - math.log(D0)) * (-r0) / (r1 - r0)
            return math.exp(x), f"D ≈ {math.exp(x):.0f}, between {D0} and {D1}"
    return None, f"not up to D={sizes[-1]}"


def _recommend(sizes, picks):
    """(AUTO_DIRECT_MAX_D, AUTO_RFFT_MAX_D) as text, from the fastest variant per D:
    direct up to the last D of the leading run of "direct" picks; fftw from the first
    D after which every larger size picks fftw."""
    n_direct = 0
    while n_direct < len(sizes) and picks[sizes[n_direct]] == "direct":
        n_direct += 1
    if n_direct == 0:
        rec_direct = f"< {sizes[0]} (direct is not fastest at any measured D)"
    elif n_direct == len(sizes):
        rec_direct = f">= {sizes[-1]} (direct fastest at every measured D)"
    else:
        rec_direct = str(sizes[n_direct - 1])
    first_fftw = len(sizes)
    while first_fftw > n_direct and picks[sizes[first_fftw - 1]] == "fftw":
        first_fftw -= 1
    if first_fftw == len(sizes):
        rec_rfft = f">= {sizes[-1]} (fftw is not fastest at the largest D measured)"
    elif first_fftw == 0:
        rec_rfft = f"< {sizes[0]} (fftw fastest at every measured D)"
    else:
        rec_rfft = str(sizes[first_fftw - 1])
    return rec_direct, rec_rfft


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats (< 30 s)")
    ap.add_argument("--sizes", help="comma-separated D values (default 16,64,256,1024,4096)")
    ap.add_argument("--depths", help="comma-separated L values (default 2,4)")
    ap.add_argument("--repeats", type=int, help="interleaved samples per variant (default 7; quick 3)")
    ap.add_argument("--sample-ms", type=float, help="minimum milliseconds per sample (default 20; quick 5)")
    ap.add_argument("--full-max-d", type=int, default=1024, help="largest D for pfull (default 1024)")
    args = ap.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [16, 64, 1024, 4096] if args.quick else list(bk.SIZES))
    depths = [int(s) for s in args.depths.split(",")] if args.depths else list(bk.DEPTHS)
    repeats = args.repeats or (3 if args.quick else 7)
    min_sample_s = (args.sample_ms or (5.0 if args.quick else 20.0)) / 1e3
    sizes = sorted(sizes)

    t_start = time.perf_counter()
    K.warmup(("float64",))
    t_warm = time.perf_counter() - t_start
    for D in sizes:
        for L in depths:
            for op in bk.CONV_OPS:
                _check_same_results("conv", op, D, L)
            for op in bk.DIAG_OPS:
                _check_same_results("diag", op, D, L)
            if D <= min(args.full_max_d, 256):
                for op in bk.FULL_OPS:
                    _check_same_results("full", op, D, L)

    results = {}  # (kind, op, D, L) -> {variant: seconds}
    for D in sizes:
        for L in depths:
            for op in bk.CONV_OPS:
                results["conv", op, D, L] = measure(bk.conv_calls(op, D, L), repeats, min_sample_s)
            for op in bk.DIAG_OPS:
                results["diag", op, D, L] = measure(bk.diag_calls(op, D, L), repeats, min_sample_s)
            if D <= args.full_max_d:
                for op in bk.FULL_OPS:
                    results["full", op, D, L] = measure(bk.full_calls(op, D, L), repeats, min_sample_s)
    elapsed = time.perf_counter() - t_start

    out = []
    p = out.append
    p("# fastbias kernel timings (float64, one network per call)")
    p("")
    p(f"numpy {np.__version__}, Python {sys.version.split()[0]}, "
      f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; {repeats} interleaved repeats, "
      f">= {min_sample_s * 1e3:g} ms per sample, min over repeats; warm-up {t_warm:.1f} s, total {elapsed:.0f} s.")
    p(f"`public` is the validated wrapper with backend=\"auto\" (AUTO_DIRECT_MAX_D={K.AUTO_DIRECT_MAX_D}, "
      f"AUTO_RFFT_MAX_D={K.AUTO_RFFT_MAX_D}); `overhead` = public − raw kernel of the backend it chose. "
      "Ratios are numpy time / variant time.")
    p("")
    p("## Conv net: P_conv and its JVP/VJP")
    p("")
    p("| D | L | op | numpy µs | direct µs | rfft µs | fftw µs | public µs (backend) | "
      "numpy/direct | numpy/rfft | numpy/fftw | numpy/public | overhead µs | fastest |")
    p("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    overheads = {}
    for D in sizes:
        chosen = K.choose_backend(D)
        for L in depths:
            for op in bk.CONV_OPS:
                t = results["conv", op, D, L]
                fastest = min(CONV_VARIANTS, key=t.get)
                ovh = t["public"] - t[chosen]
                overheads.setdefault(op, []).append((D, L, ovh))
                p(f"| {D} | {L} | {op} | {_us(t['numpy'])} | {_us(t['direct'])} | {_us(t['rfft'])} | "
                  f"{_us(t['fftw'])} | {_us(t['public'])} ({chosen}) | {_ratio(t['numpy'], t['direct'])} | "
                  f"{_ratio(t['numpy'], t['rfft'])} | {_ratio(t['numpy'], t['fftw'])} | "
                  f"{_ratio(t['numpy'], t['public'])} | {ovh * 1e6:.2f} | {fastest} |")
    p("")
    p("## Diagonal and fully connected nets")
    p("")
    p("| D | L | op | numpy µs | numba µs | public µs | numpy/numba | numpy/public | overhead µs |")
    p("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for kind, ops in (("diag", bk.DIAG_OPS), ("full", bk.FULL_OPS)):
        for D in sizes:
            for L in depths:
                for op in ops:
                    t = results.get((kind, op, D, L))
                    if t is None:
                        continue
                    ovh = t["public"] - t["numba"]
                    overheads.setdefault(op, []).append((D, L, ovh))
                    p(f"| {D} | {L} | {op} | {_us(t['numpy'])} | {_us(t['numba'])} | {_us(t['public'])} | "
                      f"{_ratio(t['numpy'], t['numba'])} | {_ratio(t['numpy'], t['public'])} | {ovh * 1e6:.2f} |")
    p("")
    p("## Wrapper overhead (µs per public call − raw kernel)")
    p("")
    small = [o for op in bk.CONV_OPS + bk.DIAG_OPS for (D, L, o) in overheads[op] if D == sizes[0]]
    p(f"At D={sizes[0]}: median {statistics.median(small) * 1e6:.2f} µs over conv and diag ops "
      f"(range {min(small) * 1e6:.2f}..{max(small) * 1e6:.2f}); per op (median over D, L): "
      + ", ".join(f"{op} {statistics.median(o for (_, _, o) in overheads[op]) * 1e6:.2f}"
                  for op in bk.CONV_OPS + bk.DIAG_OPS + bk.FULL_OPS if op in overheads) + ".")
    p("")
    p("## Fastest conv variant per D (raw kernels; geometric mean over ops and depths of time / best time)")
    p("")
    p("| D | direct | rfft | fftw | fastest | auto picks |")
    p("|---:|---:|---:|---:|---|---|")
    score, picks = {}, {}
    for D in sizes:
        cases = [results["conv", op, D, L] for op in bk.CONV_OPS for L in depths]
        score[D] = {v: math.exp(statistics.fmean(math.log(c[v] / min(c[w] for w in CONV_VARIANTS)) for c in cases))
                    for v in CONV_VARIANTS}
        best = picks[D] = min(CONV_VARIANTS, key=score[D].get)
        p(f"| {D} | {score[D]['direct']:.2f} | {score[D]['rfft']:.2f} | {score[D]['fftw']:.2f} | {best} | "
          f"{K.choose_backend(D)} |")
    p("")
    gm = {v: {D: math.exp(statistics.fmean(math.log(results["conv", op, D, L][v])
                                           for op in bk.CONV_OPS for L in depths)) for D in sizes}
          for v in CONV_VARIANTS}
    p("Crossovers of the geometric-mean time over ops and depths (log-log interpolation):")
    p("")
    p(f"- direct → rfft: {_crossover(sizes, gm['direct'], gm['rfft'])[1]}")
    p(f"- rfft → fftw: {_crossover(sizes, gm['rfft'], gm['fftw'])[1]}")
    p(f"- direct → fftw: {_crossover(sizes, gm['direct'], gm['fftw'])[1]}")
    ties = [D for D in sizes if sorted(score[D].values())[1] < 1.10]
    if ties:
        p(f"- within 10% of each other (a tie on a noisy machine) at D = {', '.join(map(str, ties))}")
    rec_direct, rec_rfft = _recommend(sizes, picks)
    p(f"- from the fastest variant per D: AUTO_DIRECT_MAX_D = {rec_direct}, AUTO_RFFT_MAX_D = {rec_rfft} "
      f"(now {K.AUTO_DIRECT_MAX_D}, {K.AUTO_RFFT_MAX_D}); the grid is coarse: refine with --sizes.")
    p("")
    p("## Targets")
    p("")
    small_D = [D for D in sizes if D <= 64]
    large_D = [D for D in sizes if D >= 1024]
    rows1 = []
    for D in small_D:
        for L in depths:
            for op in bk.CONV_OPS:
                t = results["conv", op, D, L]
                r = t["numpy"] / min(t["direct"], t["rfft"])
                rows1.append((r >= 5.0, f"{op} D={D} L={L}: {r:.2f}x"))
    ok1 = bool(rows1) and all(ok for ok, _ in rows1)
    p(f"- [{'x' if ok1 else ' '}] D <= 64: raw direct or rfft >= 5x faster than numpy.fft — "
      + ("; ".join(s for _, s in rows1) if rows1 else "no such size measured"))
    rows2 = []
    for D in large_D:
        for L in depths:
            for op in bk.CONV_OPS:
                t = results["conv", op, D, L]
                ok = t["fftw"] < t["direct"] and t["fftw"] < t["numpy"]
                rows2.append((ok, f"{op} D={D} L={L}: numpy/fftw {t['numpy'] / t['fftw']:.2f}, "
                                  f"direct/fftw {t['direct'] / t['fftw']:.0f}"))
    ok2 = bool(rows2) and all(ok for ok, _ in rows2)
    p(f"- [{'x' if ok2 else ' '}] D >= 1024: fftw faster than direct and numpy.fft — "
      + ("; ".join(s for _, s in rows2) if rows2 else "no such size measured"))
    rows3 = [f"{op} D={D} L={L}: {results['conv', op, D, L]['numpy'] / results['conv', op, D, L]['public']:.2f}x"
             for D in small_D for L in depths for op in bk.CONV_OPS]
    if rows3:
        p("- (not a target; what a user calling the public API sees) D <= 64: numpy / public — " + "; ".join(rows3))
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
