"""asv suites for the GD engine: ``fastbias.fit`` and ``fit_many`` (adaptive steps,
exponential loss), memory of long runs, and cold start.

* ``Fit``: one run per architecture at (N, D, L) in ``CASES`` ("linear" is depth 1,
  so it runs at (16,32), (128,128), (256,1024) under the L=2 and L=3 cases and skips
  (16,32,4)). ``time_fit`` is ``STEPS[arch, case]`` iterations of the driver ``fit``
  uses (``Run.resume`` of a ``fit(steps=0)`` run, log-spaced history recorded):
  divide by the steps for µs per iteration. ``time_fit_setup`` is ``fit(steps=0)``
  (validation, the separability LP, the prepared data), paid once per call. ``fit``
  runs its one run on the calling thread (``_bins.gd_bins`` for diag/conv,
  ``gd_group`` with one run for fc/linear).
  ``track_us_per_iteration`` reports the µs per iteration directly (minimum of 3
  timed samples of ``STEPS[arch, case]`` iterations). A single run is one thread
  by design (``fit`` has no thread option): the threads are ``FitMany``'s.
* ``FitMany``: 64 seeds sharing one dataset (4 lockstep groups of ``engine.WIDE_GROUP``
  runs on a pool of ``threads`` workers), every arch and case of ``Fit`` (but fc at
  (256,1024,3): 64 runs of 2.1M weights, 1 GB), ``threads`` 1 and 2,
  ``record="last"``: ``time_fit_many`` is ``fit_many(steps=BATCH_STEPS[arch, case])``;
  ``track_us_per_run_iteration`` = (T(steps) - T(0)) / (64 steps), minimum of 3
  samples each (µs per run-iteration; one thread should match ``Fit``'s µs per
  iteration, two threads half of it on two free cores).
* ``LongRunMemory``: ``peakmem_fit`` (the process's peak RSS) and
  ``track_traced_peak`` (peak bytes allocated through Python/NumPy during the call,
  by ``tracemalloc``) of a conv (16,32,2) run of 10^4 and 10^6 steps with the default
  log-spaced history: neither may grow with the steps beyond the ~20 history rows
  per decade (``track_history_rows``; tests/test_memory.py asserts it).
* ``ColdStart``: ``timeraw_*`` in a fresh interpreter: ``import fastbias`` and a first
  ``fit``, with Numba's on-disk cache warm and with an empty cache (compilation).

``setup()`` compiles (or loads) the engine with a small fit first, so compilation
stays out of ``time_*``. asv re-runs ``setup()`` before every sample, and these
classes time one call per sample (``number = 1``), so each sample starts from the
same initial weights. Absolute times drift on shared machines: ``python
benchmarks/peers.py`` measures the engine against PyTorch and JAX, interleaved in
one process.
"""

import copy
import functools
import time
import tracemalloc

import fastbias
from fastbias.data import gaussian_dataset

ARCHS = ("linear", "fc", "diag", "conv")
CASES = ("16x32x2", "16x32x4", "128x128x3", "256x1024x3")
BATCH_SEEDS = 64
TRACK_SAMPLES = 3  # timed samples per track_* value (minimum taken)

# Iterations per sample, so that a sample takes about 0.05-0.5 s (2-core machine).
STEPS = {
    ("linear", "16x32x2"): 100_000, ("linear", "128x128x3"): 20_000, ("linear", "256x1024x3"): 2_000,
    ("fc", "16x32x2"): 50_000, ("fc", "16x32x4"): 10_000, ("fc", "128x128x3"): 500, ("fc", "256x1024x3"): 5,
    ("diag", "16x32x2"): 100_000, ("diag", "16x32x4"): 100_000, ("diag", "128x128x3"): 20_000,
    ("diag", "256x1024x3"): 2_000,
    ("conv", "16x32x2"): 100_000, ("conv", "16x32x4"): 100_000, ("conv", "128x128x3"): 20_000,
    ("conv", "256x1024x3"): 2_000,
}
# Iterations per fit_many sample (64 runs): about STEPS / 64.
BATCH_STEPS = {
    ("linear", "16x32x2"): 1_500, ("linear", "128x128x3"): 300, ("linear", "256x1024x3"): 30,
    ("fc", "16x32x2"): 800, ("fc", "16x32x4"): 150, ("fc", "128x128x3"): 8,
    ("diag", "16x32x2"): 1_500, ("diag", "16x32x4"): 1_500, ("diag", "128x128x3"): 300,
    ("diag", "256x1024x3"): 30,
    ("conv", "16x32x2"): 1_500, ("conv", "16x32x4"): 2_000, ("conv", "128x128x3"): 300,
    ("conv", "256x1024x3"): 30,
}


def parse_case(case):
    N, D, L = (int(v) for v in case.split("x"))
    return N, D, L


@functools.lru_cache(maxsize=None)
def dataset(N, D):
    return gaussian_dataset(N, D, seed=0)


def depth_of(arch, case):
    """The depth a case runs at; NotImplementedError (asv: skip) for linear at L=4
    (depth 1 everywhere: the L=4 case would repeat the L=2 one)."""
    N, D, L = parse_case(case)
    if arch == "linear":
        if L == 4:
            raise NotImplementedError("linear has depth 1: (16,32) runs under 16x32x2")
        return 1
    return L


@functools.lru_cache(maxsize=None)
def initial_run(arch, case):
    """``fit(steps=0)``: data validated and prepared, weights initialized (memoized)."""
    N, D, _ = parse_case(case)
    X, y = dataset(N, D)
    return fastbias.fit(X, y, arch=arch, depth=depth_of(arch, case), steps=0)


def warm_engine():
    """Compile (or load from the on-disk cache) the compiled loop: a tiny fit."""
    X, y = dataset(16, 32)
    fastbias.fit(X, y, arch="conv", depth=2, steps=3)


class Fit:
    params = [ARCHS, CASES]
    param_names = ["arch", "case"]
    number = 1
    warmup_time = 0.0
    timeout = 300

    def setup(self, arch, case):
        depth_of(arch, case)
        warm_engine()
        self.run = copy.deepcopy(initial_run(arch, case))
        self.steps = STEPS[arch, case]
        N, D, _ = parse_case(case)
        self.X, self.y = dataset(N, D)
        self.depth = depth_of(arch, case)

    def time_fit(self, arch, case):
        self.run.resume(self.steps)

    def time_fit_setup(self, arch, case):
        fastbias.fit(self.X, self.y, arch=arch, depth=self.depth, steps=0)

    def track_us_per_iteration(self, arch, case):
        best = float("inf")
        for _ in range(TRACK_SAMPLES):
            run = copy.deepcopy(initial_run(arch, case))
            t0 = time.perf_counter()
            run.resume(self.steps)
            best = min(best, time.perf_counter() - t0)
        return best / self.steps * 1e6

    track_us_per_iteration.unit = "us"


def _min_time(fn, samples):
    best = float("inf")
    for _ in range(samples):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class FitMany:
    params = [ARCHS, CASES, [1, 2]]
    param_names = ["arch", "case", "threads"]
    number = 1
    warmup_time = 0.0
    timeout = 300

    def setup(self, arch, case, threads):
        self.depth = depth_of(arch, case)
        if (arch, case) not in BATCH_STEPS:
            raise NotImplementedError(f"fit_many of {BATCH_SEEDS} {arch} runs at {case}: too large")
        warm_engine()
        N, D, _ = parse_case(case)
        self.X, self.y = dataset(N, D)
        self.steps = BATCH_STEPS[arch, case]
        self._fit_many(arch, threads, 2)  # start fit_many's thread pool

    def _fit_many(self, arch, threads, steps):
        return fastbias.fit_many(self.X, self.y, arch=arch, depth=self.depth, seeds=range(BATCH_SEEDS),
                                 steps=steps, threads=threads, record="last")

    def time_fit_many(self, arch, case, threads):
        self._fit_many(arch, threads, self.steps)

    def time_fit_many_setup(self, arch, case, threads):
        self._fit_many(arch, threads, 0)

    def track_us_per_run_iteration(self, arch, case, threads):
        t_run = _min_time(lambda: self._fit_many(arch, threads, self.steps), TRACK_SAMPLES)
        t_setup = _min_time(lambda: self._fit_many(arch, threads, 0), TRACK_SAMPLES)
        return (t_run - t_setup) / (BATCH_SEEDS * self.steps) * 1e6

    track_us_per_run_iteration.unit = "us"


class LongRunMemory:
    """A long conv (16,32,2) run with the default log-spaced history."""

    params = [[10_000, 1_000_000]]
    param_names = ["steps"]
    timeout = 300

    def setup(self, steps):
        warm_engine()
        self.X, self.y = dataset(16, 32)

    def _fit(self, steps):
        return fastbias.fit(self.X, self.y, arch="conv", depth=2, steps=steps)

    def peakmem_fit(self, steps):
        self._fit(steps)

    def track_traced_peak(self, steps):
        tracemalloc.start()
        try:
            run = self._fit(steps)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert run.steps_done == steps
        return peak

    track_traced_peak.unit = "bytes"

    def track_history_rows(self, steps):
        return len(self._fit(steps).history)

    track_history_rows.unit = "rows"


_FRESH_NUMBA_CACHE = """
import atexit, os, shutil, tempfile
_d = tempfile.mkdtemp(prefix="fastbias-numba-")
atexit.register(shutil.rmtree, _d, True)
os.environ["NUMBA_CACHE_DIR"] = _d
"""

_FIRST_FIT = """
import fastbias
from fastbias.data import gaussian_dataset
X, y = gaussian_dataset(16, 32, seed=0)
fastbias.fit(X, y, arch="conv", depth=4, steps=100)
"""


class ColdStart:
    """A fresh interpreter: ``import fastbias`` and a first ``fit``. With the on-disk
    cache warm (the usual second run) the compiled loop is loaded; with an empty
    ``NUMBA_CACHE_DIR`` it is compiled."""

    number = 1
    repeat = (1, 3, 300.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self):
        warm_engine()  # fill the on-disk cache for the "cached" cases

    def timeraw_import_fastbias(self):
        return "import fastbias"

    def timeraw_first_fit_cached(self):
        return _FIRST_FIT

    def timeraw_first_fit_compile(self):
        return _FIRST_FIT, _FRESH_NUMBA_CACHE
