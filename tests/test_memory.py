"""A long run keeps O(log steps) history and no per-step state.

``fit`` records about ``RECORDS_PER_DECADE`` rows per decade of steps (log-spaced),
so a run of 10^6 steps holds about 20 more rows than one of 10^5, and nothing else
in the ``Run`` may grow with the steps. The sizes are measured by walking the
objects a ``Run`` holds (arrays by their bytes, containers by their items), so a
per-step array or list anywhere in it shows up, whatever its name.
"""

import math
import sys

import numpy as np
import pytest

import fastbias
from fastbias.data import gaussian_dataset
from fastbias.engine import RECORDS_PER_DECADE

ROW_BYTES = 2048
"""Generous bytes per history row (a tuple of ~10 Python numbers is ~400 bytes)."""


def deep_size(obj, seen=None):
    """Bytes held by ``obj`` and everything it refers to (arrays, containers,
    instance attributes), each object counted once; modules, classes and functions
    are not followed."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (type, type(sys), type(deep_size))):
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):  # getsizeof counts the data of an array that owns it
        return sys.getsizeof(obj) + (0 if obj.base is None else deep_size(obj.base, seen))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_size(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        size += deep_size(vars(obj), seen)
    if hasattr(obj, "__slots__"):
        size += sum(deep_size(getattr(obj, s), seen) for s in obj.__slots__ if hasattr(obj, s))
    return size


@pytest.fixture(scope="module")
def data():
    return gaussian_dataset(16, 32, seed=0)


def max_rows(steps):
    """The log-spaced record points in (0, steps], the initial point and the last step."""
    return math.ceil(RECORDS_PER_DECADE * math.log10(steps)) + 3


@pytest.mark.parametrize("arch,depth", [("conv", 2), ("diag", 3), ("fc", 2)])
def test_history_grows_with_log_steps(data, arch, depth):
    X, y = data
    counts = {}
    for steps in (10**2, 10**4, 10**6 if arch != "fc" else 10**5):
        run = fastbias.fit(X, y, arch=arch, depth=depth, steps=steps)
        assert run.steps_done == steps
        h = run.history
        counts[steps] = len(h)
        assert len(h) <= max_rows(steps), (steps, len(h))
        assert h["step"][0] == 0 and h["step"][-1] == steps
        assert np.all(np.diff(h["step"]) > 0)
        # log-spaced: consecutive record points at most 10^(2/RECORDS_PER_DECADE) apart past the start
        later = h["step"][h["step"] >= 100]
        assert np.all(later[1:] / later[:-1] <= 10 ** (2 / RECORDS_PER_DECADE) + 1e-9)
    (s0, c0), (s1, c1), (s2, c2) = sorted(counts.items())
    # about RECORDS_PER_DECADE rows per decade, never proportional to the steps
    for (sa, ca), (sb, cb) in (((s0, c0), (s1, c1)), ((s1, c1), (s2, c2))):
        decades = math.log10(sb / sa)
        assert cb - ca <= RECORDS_PER_DECADE * decades + 2, (sa, sb, ca, cb)


def test_run_holds_no_per_step_arrays(data):
    """With one history row per call (record="last") a run of 10^5 steps holds
    exactly as much as one of 10^2; with the log-spaced history it holds more only
    by its extra rows."""
    X, y = data
    short = fastbias.fit(X, y, arch="conv", depth=3, steps=100, record="last")
    long = fastbias.fit(X, y, arch="conv", depth=3, steps=100_000, record="last")
    assert len(short.history) == len(long.history) == 2
    assert abs(deep_size(long) - deep_size(short)) <= 64  # Python ints of different sizes, nothing else

    short = fastbias.fit(X, y, arch="conv", depth=3, steps=100)
    long = fastbias.fit(X, y, arch="conv", depth=3, steps=1_000_000)
    extra_rows = len(long.history) - len(short.history)
    assert 0 < extra_rows <= 4 * RECORDS_PER_DECADE + 2
    assert 0 < deep_size(long) - deep_size(short) <= extra_rows * ROW_BYTES

    # resume continues without accumulating either
    before = deep_size(long)
    rows = len(long.history)
    long.resume(100_000)
    assert deep_size(long) - before <= (len(long.history) - rows) * ROW_BYTES
