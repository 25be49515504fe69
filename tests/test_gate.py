"""The regression gate (benchmarks/gate.py): its NumPy reference computes what the
engine computes, its verdicts follow the limits, the committed limits cover every
entry, and a deliberately slowed hot path makes it fail.

The gate's timings are not asserted here (tests never time); the subprocess runs
check exit codes against limits far from the measured ratios in both directions
(a 4x slowdown against the committed limit, which allows +30%; the normal path
against a limit 10x the committed one).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbias
from fastbias.data import gaussian_dataset

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
GATE = BENCH / "gate.py"


@pytest.fixture(scope="module")
def gate():
    sys.path.insert(0, str(BENCH))
    try:
        import gate as module
    finally:
        sys.path.remove(str(BENCH))
    return module


def run_gate(*args, env=None, timeout=300):
    full_env = dict(os.environ)
    full_env.pop("FASTBIAS_GATE_SLOWDOWN", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(GATE), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=BENCH.parent)


# --------------------------------------------------------------------------- the reference


@pytest.mark.parametrize("arch,depth", [("linear", 1), ("fc", 2), ("fc", 3), ("diag", 2), ("diag", 4),
                                        ("conv", 2), ("conv", 3), ("conv", 4)])
@pytest.mark.parametrize("N,D", [(16, 32), (7, 15)])
def test_numpy_reference_runs_the_engines_iteration(gate, arch, depth, N, D):
    """NumpyGD (what the engine entries are timed against) computes the engine's
    iterates: adaptive steps (no halvings in these runs, so the certification does
    not act) and fixed steps, two runs at once."""
    X, y = gaussian_dataset(N, D, seed=1)
    run0 = fastbias.fit(X, y, arch=arch, depth=depth, steps=0, seed=3)
    other = fastbias.fit(X, y, arch=arch, depth=depth, steps=0, seed=4)
    steps = 40
    ref = fastbias.fit(X, y, arch=arch, depth=depth, steps=steps, seed=3, record="last")
    assert ref.halvings == 0
    g = gate.NumpyGD(X, y, arch, [run0.weights, other.weights])
    g.run(steps)
    np.testing.assert_allclose(g.betas()[0], ref.beta, rtol=1e-10, atol=1e-12 * np.abs(ref.beta).max())
    ref_other = fastbias.fit(X, y, arch=arch, depth=depth, steps=steps, seed=4, record="last")
    np.testing.assert_allclose(g.betas()[1], ref_other.beta, rtol=1e-10, atol=1e-12 * np.abs(ref_other.beta).max())

    eta = 1e-3
    fixed = fastbias.fit(X, y, arch=arch, depth=depth, steps=steps, seed=3, record="last", step="fixed",
                         step_size=eta)
    g = gate.NumpyGD(X, y, arch, [run0.weights], step="fixed", step_size=eta)
    g.run(steps)
    np.testing.assert_allclose(g.betas()[0], fixed.beta, rtol=1e-10, atol=1e-12 * np.abs(fixed.beta).max())
    g.reset()
    np.testing.assert_allclose(g.betas()[0], run0.beta, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- verdicts


def test_verdict_follows_limit_and_margin(gate):
    limits = {"x": {"limit": 0.1, "margin": 0.3}}
    at = gate.evaluate("x", {"ours": 0.13, "ref": 1.0}, limits, "call")
    assert at["status"] == "ok" and math.isclose(at["allowed"], 0.13)
    above = gate.evaluate("x", {"ours": 0.1301, "ref": 1.0}, limits, "call")
    assert above["status"] == "FAIL"
    faster = gate.evaluate("x", {"ours": 0.01, "ref": 1.0}, limits, "call")
    assert faster["status"] == "ok"  # limits are "not worse than": speed-ups pass
    missing = gate.evaluate("y", {"ours": 0.01, "ref": 1.0}, limits, "call")
    assert missing["status"] == "no limit" and missing["allowed"] is None
    text = gate.table([at, above, missing])
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["entry", "per"]
    assert "FAIL" in lines[3] and "no limit" in lines[4]


def test_measurement_pools_minima_and_counts_unslowed_work(gate):
    ours = gate.Side(lambda n: None, 100)
    ref = gate.Side(lambda n: None, 10, units=4)
    m = gate.Measurement(ours, ref, factor=3.0)
    assert m.n_ours == 300  # the slowed side does 3x the work per sample
    m.best.update(ours=0.5, ref=0.8)
    other = gate.Measurement(ours, ref, factor=3.0)
    other.best.update(ours=0.2, ref=0.9)
    m.pool(other)
    assert m.per_unit() == (0.2 / 100, 0.8 / 40)  # counted as 100 units: 3x the time per unit


def test_limits_file_is_validated(gate, tmp_path):
    bad = tmp_path / "limits.toml"
    bad.write_text('[entries.pconv_direct_16]\nlimit = 0.1\nmargin = -0.2\n')
    with pytest.raises(ValueError, match=r"entries\.pconv_direct_16\.margin"):
        gate.load_limits(bad)
    bad.write_text('[entries.pconv_direct_16]\nmargin = 0.2\n')
    with pytest.raises(ValueError, match=r"entries\.pconv_direct_16\.limit"):
        gate.load_limits(bad)


def test_limits_round_trip(gate, tmp_path):
    limits = {"pconv_direct_16": dict(limit=0.0712345, margin=0.3, measured=[0.07, 0.0712345], set_at="abc",
                                      note="a note")}
    path = tmp_path / "limits.toml"
    gate.write_limits(path, limits, {"command": "x"})
    got, meta = gate.load_limits(path)
    assert meta == {"command": "x"}
    assert got["pconv_direct_16"] == dict(limit=0.07123, margin=0.3, measured=[0.07, 0.07123], set_at="abc",
                                          note="a note")


def test_committed_limits_cover_every_entry(gate):
    limits, meta = gate.load_limits(gate.LIMITS_PATH)
    assert set(limits) == set(gate.ENTRIES)
    for name, lim in limits.items():
        assert lim["measured"], name
        assert lim["limit"] == pytest.approx(max(lim["measured"]), rel=1e-3), name
        assert 0 < lim["margin"] <= 1.0, name
    assert meta["command"].startswith("python benchmarks/gate.py")


def test_slowdown_variable_is_validated(gate, monkeypatch):
    monkeypatch.delenv(gate.SLOWDOWN_ENV, raising=False)
    assert gate.slowdown() == 1.0
    monkeypatch.setenv(gate.SLOWDOWN_ENV, "2.5")
    assert gate.slowdown() == 2.5
    for bad in ("0.5", "fast", "nan"):
        monkeypatch.setenv(gate.SLOWDOWN_ENV, bad)
        with pytest.raises(ValueError, match="FASTBIAS_GATE_SLOWDOWN"):
            gate.slowdown()


def test_entry_selection(gate):
    assert gate.select("pconv_direct_16") == ["pconv_direct_16"]
    assert set(gate.select("fit_conv_*")) == {"fit_conv_16x32x2", "fit_conv_16x32x4", "fit_conv_128x128x3"}
    with pytest.raises(ValueError, match="no entry matches 'nope'"):
        gate.select("nope")


# --------------------------------------------------------------------------- the gate itself


def test_gate_fails_when_a_hot_path_is_slowed(tmp_path):
    """A hot path doing 4x its work (FASTBIAS_GATE_SLOWDOWN=4) against the committed
    limits: exit status 1, the entry marked FAIL after its retries, its ratio above
    what the limit allows."""
    out = tmp_path / "rows.json"
    res = run_gate("--only", "pconv_direct_16", "--json", str(out), env={"FASTBIAS_GATE_SLOWDOWN": "4"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED: 1 of 1 entries: pconv_direct_16" in res.stdout
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "FAIL" and row["attempts"] == 3
    assert row["ratio"] > row["allowed"]


def test_gate_passes_within_its_limits(gate, tmp_path):
    """The same entry, unslowed, against a limit 10x the committed one: exit status 0."""
    committed, _ = gate.load_limits(gate.LIMITS_PATH)
    lim = committed["pconv_direct_16"]
    limits = tmp_path / "limits.toml"
    gate.write_limits(limits, {"pconv_direct_16": dict(limit=10 * lim["limit"], margin=lim["margin"],
                                                         measured=[10 * lim["limit"]])}, {"command": "test"})
    res = run_gate("--only", "pconv_direct_16", "--limits", str(limits))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "passed: 1 entries within their limits" in res.stdout


def test_gate_usage_errors():
    res = run_gate("--only", "pconv_direct_16", env={"FASTBIAS_GATE_SLOWDOWN": "0"})
    assert res.returncode == 2 and "FASTBIAS_GATE_SLOWDOWN must be a number >= 1" in res.stderr
    res = run_gate("--only", "no_such_entry")
    assert res.returncode == 2 and "no entry matches 'no_such_entry'" in res.stderr
