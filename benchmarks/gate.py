#!/usr/bin/env python
"""Regression gate: fastbias's hot paths as time ratios against NumPy, checked
against the limits in ``benchmarks/gate_limits.toml``.

    python benchmarks/gate.py                        # every entry (~10 s on 2 cores, Numba cache warm)
    python benchmarks/gate.py --only 'fit_conv_*'    # a subset (comma-separated names or globs)
    python benchmarks/gate.py --list                 # the entries and what they time
    python benchmarks/gate.py --update-limits        # re-measure (3 runs) and rewrite the limits

Absolute times on a shared, noisy 2-core machine drift by tens of percent, so the
gate never compares a time with a stored time. Each entry times one of our hot paths
("ours") and a fixed reference doing the same work in plain NumPy ("ref") in the
same process, interleaved (each repeat takes one sample of each side, the order
alternating), with a fixed amount of work per sample (about 3 ms), garbage
collection off and the minimum over the repeats per side (noise only ever adds
time). Samples are timed on the process's CPU clock (``time.process_time``; every
entry runs on one thread), so the time spent waiting for a core while other
processes hold both does not count (``--clock wall`` for elapsed time: under a load
of 5 on 2 cores its ratios scattered by up to 2.5x between runs, the CPU clock's by
at most 20%). The entry's value is the ratio ``ours / ref`` of the time per unit of
work (a call, an iteration, a run-iteration, a solve); what slows the whole machine
(clock speed, cache pressure) slows both sides and leaves the ratio alone.

An entry fails when its ratio exceeds ``limit * (1 + margin)``; a failing entry is
built afresh and measured again (``--retries``, default 2) with twice the repeats,
pooling the samples, before it counts. The exit status is 0 when every entry passes, 1 when one fails (or
has no limit), 2 on a usage error. Limits are "not worse than" thresholds: a faster
hot path only lowers its ratio; lower the limits after a speed-up with
``--update-limits`` so that the gate guards the new speed.

The references:

* kernels: ``bench_kernels.pconv_numpy`` and friends (``irfft(prod rfft)``), on the
  same layers as the raw jitted kernel (batched ``(1, L, D)`` arrays) or the public
  wrapper;
* ``fit_*``: ``NumpyGD`` below, the engine's own iteration in NumPy (half spectra
  for conv, Parseval margins, softmax weights, the adaptive step ``c / (L S)``,
  without the segment certification and the guard), from the same initial weights;
  ours is ``Run.resume(n)`` of a ``fit(steps=0, record="last")`` run (the driver
  ``fit`` uses; one history row per sample, so the compiled loop dominates; asv's
  ``bench_engine.Fit`` times it with the default log-spaced history);
* ``fit_many_*``: 64 seeds sharing one dataset, ``threads=1``, ``record="last"``,
  per run-iteration, ``(T(n) - T(0)) / (64 n)``, against ``NumpyGD`` over the 64
  runs at once (vectorized over the runs axis);
* ``max_margin_l1_16``: ``theory.max_margin(X, y, "l1")`` (cvxpy, Clarabel, the
  polish) against the same LP solved by ``scipy.optimize.linprog`` (HiGHS).

``FASTBIAS_GATE_SLOWDOWN=f`` (test only, f >= 1) makes the measured side of every
entry do f times its work per sample while counting it as one: a stand-in for a hot
path that became f times slower (tests/test_gate.py checks that the gate then
fails). The library never reads it.
"""

import os
import sys

if __name__ == "__main__":
    # One thread for NumPy's BLAS (fc's matrix products, theory's least squares): a
    # second BLAS thread on a busy 2-core machine measures the load, not the code.
    # Must be set before NumPy is imported.
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import datetime  # noqa: E402
import fnmatch  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

try:
    from . import bench_kernels as bk
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import bench_kernels as bk

LIMITS_PATH = Path(__file__).with_name("gate_limits.toml")
SLOWDOWN_ENV = "FASTBIAS_GATE_SLOWDOWN"
DEFAULT_MARGINS = {"kernel": 0.3, "engine": 0.3, "batch": 0.35, "theory": 0.5}
"""Noise margins for new entries, by group (gate_limits.toml holds each entry's)."""
REPEATS = 21
RETRIES = 2
UPDATE_RUNS = 3
BATCH_SEEDS = 64


# =========================================================================== the reference GD


def _all_but_one(A, axis):
    """``out[..., l, ...] = prod_{j != l} A[..., j, ...]`` along ``axis`` (prefix and suffix products)."""
    A = np.moveaxis(A, axis, 0)
    ones = np.ones_like(A[:1])
    prefix = np.cumprod(np.concatenate([ones, A[:-1]]), axis=0)
    suffix = np.cumprod(np.concatenate([ones, A[:0:-1]]), axis=0)[::-1]
    return np.moveaxis(prefix * suffix, 0, axis)


class NumpyGD:
    """Gradient descent on the exponential loss in plain NumPy: the engine's
    iteration (README, "Engine" and "Certified step sizes"), vectorized over R runs
    that share one dataset, with NumPy doing the arithmetic and Python the loop.

    conv: the half spectra ``W_l = rfft(w_l)``, ``Z = y pw rfft(x)``, margins
    ``m = Re <Z, prod_l W_l>``, ``W_l += mult (G / pw) conj(prod_{j != l} W_j)`` with
    ``G = sum_n e_n Z_n``; diag: the same with real arrays (identity for the DFT);
    fc and linear: the chain ``beta = W_1 ... W_L`` and its rank-one layer gradients.
    ``mult``: adaptive, ``c / (sum(e) S(w))`` with the smoothness bound ``S`` of the
    README (no segment certification, no guard); fixed, ``eta exp(max a)`` (eq. 7).

    ``runs``: the runs' initial weights, a list with one entry per run as
    ``Run.weights`` gives them ((L, D) for conv and diag, a list of matrices for fc,
    (D,) for linear).
    """

    def __init__(self, X, y, arch, runs, step="adaptive", step_size=1.0):
        self.arch = arch
        self.adaptive = step == "adaptive"
        self.c = float(step_size)
        N, D = X.shape
        self.D = D
        self.X2 = float(np.max(np.einsum("nd,nd->n", X, X)))
        yx = y[:, None] * X
        if arch in ("conv", "diag"):
            w = np.stack([np.asarray(r, dtype=np.float64) for r in runs])  # (R, L, D)
            if arch == "conv":
                K = D // 2 + 1
                pw = np.full(K, 2.0 / D)
                pw[0] = 1.0 / D
                if D % 2 == 0:
                    pw[-1] = 1.0 / D
                Xf = np.fft.rfft(X, axis=1)
                self.Zc = np.ascontiguousarray((y[:, None] * pw * Xf).conj().T)  # (K, N): m = Re(B @ Zc)
                self.Z = y[:, None] * pw * Xf  # (N, K)
                self.inv_pw = 1.0 / pw
                self.Xh = float(np.max(np.abs(np.fft.fft(X, axis=1))))
                self.state0 = np.fft.rfft(w, axis=2)
            else:
                self.Zc = np.ascontiguousarray(yx.T)
                self.Z = yx
                self.inv_pw = None
                self.Xh = float(np.max(np.abs(X)))
                self.state0 = w
            self.L = w.shape[1]
        else:
            if arch == "linear":
                runs = [[np.asarray(r, dtype=np.float64).reshape(-1, 1)] for r in runs]
            self.L = len(runs[0])
            self.state0 = [np.stack([np.asarray(r[l], dtype=np.float64) for r in runs]) for l in range(self.L)]
            self.Zc = np.ascontiguousarray(yx.T)  # (D, N)
            self.Z = yx
            self.Xh = math.sqrt(self.X2)
        L = self.L
        # smoothness: h_l = sum_{k != l} prod_{j not in {l, k}} a_j as one masked product
        idx = np.arange(L)
        keep = (idx[None, None, :] != idx[:, None, None]) & (idx[None, None, :] != idx[None, :, None])
        self._drop = ~keep  # (l, k, j): a_j left out of the product
        self._pair = idx[:, None] != idx[None, :]  # k != l
        self.reset()

    def reset(self):
        self.state = copy.deepcopy(self.state0)

    def _smoothness(self, a):
        """S per run from the layer magnitudes ``a`` (R, L)."""
        q = _all_but_one(a, axis=1)
        terms = np.where(self._drop[None], 1.0, a[:, None, None, :]).prod(axis=3)  # (R, l, k)
        h = (terms * self._pair[None]).sum(axis=2)
        return self.X2 * np.sum(q * q, axis=1) + self.Xh * np.max(h, axis=1)

    def _mult(self, Ma, se, a):
        if self.adaptive:
            return self.c / (se * self._smoothness(a))
        return self.c * np.exp(Ma)

    def step_prod(self, W):
        B = np.prod(W, axis=1)  # (R, K)
        a = -(B @ self.Zc).real  # (R, N) = -margins
        Ma = np.max(a, axis=1, keepdims=True)
        e = np.exp(a - Ma)
        se = np.sum(e, axis=1)
        G = e @ self.Z  # (R, K)
        if self.inv_pw is not None:
            G = G * self.inv_pw
            rest = np.conj(_all_but_one(W, axis=1))
        else:
            rest = _all_but_one(W, axis=1)
        mult = self._mult(Ma[:, 0], se, np.max(np.abs(W), axis=2))
        W += mult[:, None, None] * G[:, None, :] * rest

    def step_full(self, Ws):
        R = Ws[0].shape[0]
        L = self.L
        right = [None] * (L + 1)
        right[L] = np.ones((R, 1))
        for l in range(L - 1, -1, -1):
            right[l] = np.einsum("rij,rj->ri", Ws[l], right[l + 1])
        a = -(right[0] @ self.Zc)  # (R, N)
        Ma = np.max(a, axis=1, keepdims=True)
        e = np.exp(a - Ma)
        se = np.sum(e, axis=1)
        left = e @ self.Z  # (R, D): sum_n e_n y_n x_n
        mags = np.stack([np.sqrt(np.einsum("rij,rij->r", W, W)) for W in Ws], axis=1)
        mult = self._mult(Ma[:, 0], se, mags)[:, None, None]
        grads = []
        for l in range(L):
            grads.append(left[:, :, None] * right[l + 1][:, None, :])
            if l < L - 1:
                left = np.einsum("ri,rij->rj", left, Ws[l])
        for W, g in zip(Ws, grads):
            W += mult * g

    def run(self, n):
        """n iterations from the current state."""
        step = self.step_prod if self.arch in ("conv", "diag") else self.step_full
        s = self.state
        for _ in range(n):
            step(s)

    def betas(self):
        """(R, D): the predictors of the current state."""
        if self.arch in ("conv", "diag"):
            B = np.prod(self.state, axis=1)
            return np.fft.irfft(B, self.D, axis=1) if self.arch == "conv" else B
        out = self.state[-1]
        for W in self.state[-2::-1]:
            out = W @ out
        return out[:, :, 0]


# =========================================================================== entries


class Side:
    """One side of an entry: ``run(n)`` does ``n * units`` units of work (n calls,
    iterations, or iterations of ``units`` runs); ``prepare()`` (untimed) runs before
    each sample; ``fixed`` (optional) is a zero-work call whose time is subtracted
    (``fit_many``'s setup)."""

    def __init__(self, run, n, prepare=None, fixed=None, units=1):
        self.run, self.n, self.prepare, self.fixed, self.units = run, n, prepare, fixed, units


class Entry:
    def __init__(self, name, group, what, unit, make):
        self.name, self.group, self.what, self.unit, self._make = name, group, what, unit, make

    def make(self):
        """(ours, ref): built (and compiled/warmed) on first use."""
        return self._make()


def _calls(fn):
    def run(n):
        for _ in range(n):
            fn()
    return run


def _kernel(op, variant, D, L, n_ours, n_ref):
    def make():
        calls = bk.conv_calls(op, D, L)
        ours, ref = calls[variant], calls["numpy"]
        np.testing.assert_allclose(np.ravel(ours()), np.ravel(ref()), rtol=1e-8, atol=1e-8 * D)
        return Side(_calls(ours), n_ours), Side(_calls(ref), n_ref)
    return make


_DATA = {}


def _dataset(N, D):
    if (N, D) not in _DATA:
        from fastbias.data import gaussian_dataset

        _DATA[N, D] = gaussian_dataset(N, D, seed=0)
    return _DATA[N, D]


def _fit(arch, N, D, L, n_ours, n_ref):
    def make():
        import fastbias

        X, y = _dataset(N, D)
        run0 = fastbias.fit(X, y, arch=arch, depth=L, steps=0, record="last")
        copy.deepcopy(run0).resume(3)  # compile / load the loop
        box = {}

        def prepare():
            box["run"] = copy.deepcopy(run0)

        ref = NumpyGD(X, y, arch, [run0.weights])
        return (Side(lambda n: box["run"].resume(n), n_ours, prepare),
                Side(ref.run, n_ref, ref.reset))
    return make


def _fit_many(arch, N, D, L, n_ours, n_ref):
    def make():
        import fastbias

        X, y = _dataset(N, D)

        def fit_many(n):
            return fastbias.fit_many(X, y, arch=arch, depth=L, seeds=range(BATCH_SEEDS), steps=n,
                                     threads=1, record="last")

        runs = fit_many(0)
        fit_many(3)
        ref = NumpyGD(X, y, arch, [r.weights for r in runs])
        return (Side(fit_many, n_ours, fixed=lambda: fit_many(0), units=BATCH_SEEDS),
                Side(ref.run, n_ref, ref.reset, units=BATCH_SEEDS))
    return make


def _l1_linprog(X, y):
    """``min ||beta||_1`` s.t. ``y_n <x_n, beta> >= 1``: beta = u - v, u, v >= 0 (HiGHS)."""
    from scipy.optimize import linprog

    A = y[:, None] * X
    D = X.shape[1]
    res = linprog(np.ones(2 * D), A_ub=-np.hstack([A, -A]), b_ub=-np.ones(len(y)), bounds=(0, None),
                  method="highs")
    return res.x[:D] - res.x[D:]


def _max_margin(D, n_ours, n_ref):
    def make():
        from fastbias import theory

        X, y = _dataset(D // 2, D)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an inaccurate solve would time something else
            sol = theory.max_margin(X, y, "l1")
        beta = _l1_linprog(X, y)
        np.testing.assert_allclose(np.sum(np.abs(beta)), sol.value, rtol=1e-6)
        return (Side(_calls(lambda: theory.max_margin(X, y, "l1")), n_ours),
                Side(_calls(lambda: _l1_linprog(X, y)), n_ref))
    return make


def _entries():
    """Name -> Entry. The work per sample (n) is fixed: about 3 ms per sample on the
    2-core development machine, shorter than a scheduler time slice when the cores
    are shared, so the minimum over the repeats is likely an undisturbed sample
    (fit_many: about 15-25 ms, which was as stable)."""
    out = {}

    def add(name, group, what, unit, make):
        out[name] = Entry(name, group, what, unit, make)

    for op, tag, n in (("pconv", "pconv", (4_000, 300, 1_500, 250, 500, 150)),
                       ("pconv_vjp", "vjp", (3_500, 120, 1_000, 100, 300, 50))):
        add(f"{tag}_direct_16", "kernel", f"raw {op}_direct, D=16, L=2 vs numpy.fft", "call",
            _kernel(op, "direct", 16, 2, n[0], n[1]))
        add(f"{tag}_direct_64", "kernel", f"raw {op}_direct, D=64, L=4 vs numpy.fft", "call",
            _kernel(op, "direct", 64, 4, n[2], n[3]))
        add(f"{tag}_fftw_1024", "kernel", f"raw {op}_fftw, D=1024, L=2 vs numpy.fft", "call",
            _kernel(op, "fftw", 1024, 2, n[4], n[5]))
    add("pconv_public_16", "kernel", "public pconv (validation, auto backend), D=16, L=2 vs numpy.fft", "call",
        _kernel("pconv", "public", 16, 2, 1_200, 300))
    add("fit_linear_16x32", "engine", "fit, linear (16,32) vs NumpyGD", "iteration",
        _fit("linear", 16, 32, 1, 5_000, 60))
    for arch, L, n_ours, n_ref in (("fc", 2, 1_000, 50), ("fc", 4, 500, 35), ("diag", 2, 5_000, 50),
                                   ("diag", 4, 5_000, 50), ("conv", 2, 4_000, 50), ("conv", 4, 3_000, 50)):
        add(f"fit_{arch}_16x32x{L}", "engine", f"fit, {arch} (16,32,{L}) vs NumpyGD", "iteration",
            _fit(arch, 16, 32, L, n_ours, n_ref))
    add("fit_conv_128x128x3", "engine", "fit, conv (128,128,3) vs NumpyGD", "iteration",
        _fit("conv", 128, 128, 3, 500, 40))
    add("fit_many_conv_16x32x4", "batch", "fit_many, 64 seeds, threads=1, conv (16,32,4) vs batched NumpyGD",
        "run-iteration", _fit_many("conv", 16, 32, 4, 300, 50))
    add("max_margin_l1_16", "theory", "theory.max_margin l1, (8,16) vs scipy linprog (HiGHS)", "solve",
        _max_margin(16, 2, 20))
    return out


ENTRIES = _entries()


# =========================================================================== timing


def slowdown():
    """The test-only factor from FASTBIAS_GATE_SLOWDOWN (1 when unset)."""
    raw = os.environ.get(SLOWDOWN_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        f = float(raw)
    except ValueError:
        raise ValueError(f"{SLOWDOWN_ENV} must be a number >= 1, got {raw!r}") from None
    if not (math.isfinite(f) and f >= 1.0):
        raise ValueError(f"{SLOWDOWN_ENV} must be a number >= 1, got {raw!r}")
    return f


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
_clock = CLOCKS["cpu"]


def _sample(side, n):
    if side.prepare is not None:
        side.prepare()
    t0 = _clock()
    side.run(n)
    return _clock() - t0


def _sample_fixed(side):
    if side.prepare is not None:
        side.prepare()
    t0 = _clock()
    side.fixed()
    return _clock() - t0


class Measurement:
    """Pooled samples of one entry: minimum seconds per sample of each side."""

    def __init__(self, ours, ref, factor):
        self.ours, self.ref, self.factor = ours, ref, factor
        self.n_ours = max(1, round(ours.n * factor))  # the work done per sample
        self.best = {"ours": math.inf, "ref": math.inf, "fixed": math.inf}
        self.samples = 0

    def take(self, repeats):
        gc_was = gc.isenabled()
        gc.disable()
        try:
            for r in range(repeats):
                order = ("ours", "ref") if (self.samples + r) % 2 == 0 else ("ref", "ours")
                for side in order:
                    if side == "ours":
                        self.best["ours"] = min(self.best["ours"], _sample(self.ours, self.n_ours))
                        if self.ours.fixed is not None:
                            self.best["fixed"] = min(self.best["fixed"], _sample_fixed(self.ours))
                    else:
                        self.best["ref"] = min(self.best["ref"], _sample(self.ref, self.ref.n))
        finally:
            if gc_was:
                gc.enable()
        self.samples += repeats

    def pool(self, other):
        """Take in another measurement of the same entry (the minima of both)."""
        for k in self.best:
            self.best[k] = min(self.best[k], other.best[k])
        self.samples += other.samples

    def per_unit(self):
        """(ours, ref) seconds per unit of work; ours counts its ``n``, not the slowed work."""
        fixed = self.best["fixed"] if self.ours.fixed is not None else 0.0
        return ((self.best["ours"] - fixed) / (self.ours.n * self.ours.units),
                self.best["ref"] / (self.ref.n * self.ref.units))


def measure(entry, repeats, factor=1.0):
    ours, ref = entry.make()
    for side in (ours, ref):  # warm the caches at the sample's size
        _sample(side, max(1, side.n // 10))
    m = Measurement(ours, ref, factor)
    m.take(repeats)
    return m


# =========================================================================== limits


def load_limits(path):
    """{name: {"limit", "margin", "measured", ...}} and the file's [meta] table."""
    path = Path(path)
    if not path.exists():
        return {}, {}
    with open(path, "rb") as f:
        data = tomllib.load(f)
    entries = data.get("entries", {})
    for name, lim in entries.items():
        for key in ("limit", "margin"):
            v = lim.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{path}: entries.{name}.{key} must be a non-negative number, got {v!r}")
    return entries, data.get("meta", {})


def verdict(ratio, limit):
    """(status, allowed): "ok" when ``ratio <= limit * (1 + margin)``, "FAIL" when
    above, "no limit" when the entry has none (which fails too)."""
    if limit is None:
        return "no limit", None
    allowed = limit["limit"] * (1.0 + limit["margin"])
    return ("ok" if ratio <= allowed else "FAIL"), allowed


def _fmt_time(t):
    if t is None or not math.isfinite(t):
        return "—"
    for scale, unit in ((1e-6, "ns"), (1e-3, "µs"), (1.0, "ms")):
        if t < scale:
            return f"{t / scale * 1e3:.3g} {unit}"
    return f"{t:.3g} s"


def table(rows):
    """The readable table: one dict per entry with name, unit, ours, ref, ratio,
    limit (or None), margin, allowed, status, attempts."""
    head = ("entry", "per", "ours", "NumPy ref", "ratio", "limit", "margin", "allowed", "status")
    lines = [head]
    for r in rows:
        lim = r.get("limit")
        lines.append((
            r["name"], r["unit"], _fmt_time(r["ours"]), _fmt_time(r["ref"]), f"{r['ratio']:.4g}",
            "—" if lim is None else f"{lim:.4g}",
            "—" if lim is None else f"+{r['margin']:.0%}",
            "—" if r.get("allowed") is None else f"{r['allowed']:.4g}",
            r["status"] + (f" ({r['attempts']} tries)" if r.get("attempts", 1) > 1 else ""),
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    right = {2, 3, 4, 5, 6, 7}
    out = []
    for k, line in enumerate(lines):
        out.append("  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def evaluate(name, m_or_values, limits, unit=""):
    """One table row from a measurement (or a dict with ``ours``/``ref`` seconds per unit)."""
    if isinstance(m_or_values, Measurement):
        ours, ref = m_or_values.per_unit()
    else:
        ours, ref = m_or_values["ours"], m_or_values["ref"]
    ratio = ours / ref
    lim = limits.get(name)
    status, allowed = verdict(ratio, lim)
    return dict(name=name, unit=unit, ours=ours, ref=ref, ratio=ratio,
                limit=None if lim is None else lim["limit"], margin=None if lim is None else lim["margin"],
                allowed=allowed, status=status, attempts=1)


def run_gate(names, limits, repeats, retries, factor, log):
    rows = []
    for name in names:
        entry = ENTRIES[name]
        t0 = time.perf_counter()
        m = measure(entry, repeats, factor)
        row = evaluate(name, m, limits, entry.unit)
        attempts = 1
        while row["status"] == "FAIL" and attempts <= retries:
            # a fresh build of the entry (new arrays, new runs) and twice the samples,
            # pooled with the earlier ones: the minima can only fall
            m.pool(measure(entry, 2 * repeats, factor))
            attempts += 1
            row = evaluate(name, m, limits, entry.unit)
        row["attempts"] = attempts
        rows.append(row)
        log(f"{name}: ratio {row['ratio']:.4g} ({row['status']}, {attempts} "
            f"attempt{'s' if attempts > 1 else ''}, {time.perf_counter() - t0:.1f} s)")
    return rows


def _toml_value(v):
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def write_limits(path, limits, meta):
    lines = [
        "# Limits of the regression gate (benchmarks/gate.py), one table per entry:",
        "#   limit    the ratio ours / NumPy reference (time per unit of work) that the entry must not",
        "#            exceed by more than the margin; set to the largest of `measured`",
        "#   measured the ratios it was set from (one per gate run, each the minimum over interleaved",
        "#            repeats), on the machine and commit in [meta]",
        "#   margin   the stated noise allowance: the gate fails when ratio > limit * (1 + margin)",
        "# Rewritten by `python benchmarks/gate.py --update-limits [--only NAMES]` (margins and notes",
        "# are kept); lower a limit after a speed-up, raise one only for a deliberate trade.",
        "",
        "[meta]",
    ]
    for k, v in meta.items():
        lines.append(f"{k} = {_toml_value(v)}")
    for name in sorted(limits, key=lambda n: list(ENTRIES).index(n) if n in ENTRIES else len(ENTRIES)):
        lim = limits[name]
        lines += ["", f"[entries.{name}]"]
        for k in ("limit", "margin", "measured", "set_at", "note"):
            if k in lim:
                v = lim[k]
                if k == "limit":
                    v = float(f"{v:.4g}")
                elif k == "measured":
                    v = [float(f"{x:.4g}") for x in v]
                lines.append(f"{k} = {_toml_value(v)}")
    Path(path).write_text("\n".join(lines) + "\n")


def _commit():
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        sha = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "") if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _machine():
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {cpu}"


def _loadavg():
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return "n/a"


def select(only):
    if not only:
        return list(ENTRIES)
    names = []
    for pat in only.split(","):
        pat = pat.strip()
        hits = [n for n in ENTRIES if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise ValueError(f"--only: no entry matches {pat!r} (see --list)")
        names += [n for n in hits if n not in names]
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated entry names or globs (default: all)")
    ap.add_argument("--list", action="store_true", help="list the entries and exit")
    ap.add_argument("--limits", default=str(LIMITS_PATH), help="the limits file (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="interleaved samples per side (default %(default)s)")
    ap.add_argument("--retries", type=int, default=RETRIES,
                    help="re-measurements of a failing entry, 2x the repeats each (default %(default)s)")
    ap.add_argument("--update-limits", action="store_true",
                    help=f"measure {UPDATE_RUNS} times and rewrite the selected entries' limits")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="cpu",
                    help="cpu: the process's CPU time (time spent waiting for a core does not count; "
                         "default); wall: elapsed time")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.retries < 0:
        ap.error("--repeats must be >= 1 and --retries >= 0")
    global _clock
    _clock = CLOCKS[args.clock]
    if args.list:
        for e in ENTRIES.values():
            print(f"{e.name:24s} {e.group:7s} per {e.unit:14s} {e.what}")
        return 0
    try:
        names = select(args.only)
        factor = slowdown()
        limits, meta = load_limits(args.limits)
    except ValueError as exc:
        ap.error(str(exc))
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:5.1f} s] {msg}", file=sys.stderr, flush=True)

    import fastbias

    load0 = _loadavg()
    if args.update_limits:
        if factor != 1.0:
            ap.error(f"--update-limits with {SLOWDOWN_ENV} set would store slowed ratios")
        runs = []
        for k in range(UPDATE_RUNS):
            log(f"update run {k + 1} of {UPDATE_RUNS}")
            runs.append(run_gate(names, {}, args.repeats, 0, 1.0, log))
        commit = _commit()
        for name in names:
            measured = [next(r for r in rows if r["name"] == name)["ratio"] for rows in runs]
            old = limits.get(name, {})
            limits[name] = dict(limit=max(measured), margin=old.get("margin", DEFAULT_MARGINS[ENTRIES[name].group]),
                                measured=measured, set_at=commit, **({"note": old["note"]} if "note" in old else {}))
        meta = dict(meta)
        meta.update(command="python benchmarks/gate.py --update-limits", updated=datetime.date.today().isoformat(),
                    machine=_machine(), load_average=f"{load0} at the start, {_loadavg()} at the end")
        write_limits(args.limits, limits, meta)
        rows = [evaluate(n, {"ours": runs[-1][i]["ours"], "ref": runs[-1][i]["ref"]}, limits, ENTRIES[n].unit)
                for i, n in enumerate(names)]
        print(f"wrote {args.limits}: {len(names)} entries (limit = the largest of {UPDATE_RUNS} runs' ratios)")
        print(table(rows))
        return 0

    rows = run_gate(names, limits, args.repeats, args.retries, factor, log)
    elapsed = time.perf_counter() - t_start
    print(f"fastbias gate at {_commit()} (fastbias {fastbias.__version__}, numpy {np.__version__}): "
          f"ratio = ours / NumPy reference, time per unit of work, min of {args.repeats} interleaved repeats; "
          f"fails when ratio > limit x (1 + margin). {_machine()}, load average {load0} at the start, "
          f"{_loadavg()} at the end; {elapsed:.0f} s"
          + (f"; {SLOWDOWN_ENV}={factor:g}" if factor != 1.0 else ""))
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(rows=rows, slowdown=factor), indent=1))
    unknown = sorted(set(limits) - set(ENTRIES))
    if unknown:
        print(f"note: {args.limits} has limits for unknown entries: {', '.join(unknown)}")
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        print(f"\nFAILED: {len(bad)} of {len(rows)} entries: "
              + "; ".join(f"{r['name']} ratio {r['ratio']:.4g} > allowed {r['allowed']:.4g}"
                          if r["allowed"] is not None else f"{r['name']} has no limit (run --update-limits)"
                          for r in bad))
        return 1
    print(f"\npassed: {len(rows)} entries within their limits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
