"""Sweeps: spec validation, results equal to single fits, kill-and-resume, Dask, atomic writes.

The kill tests run ``python -m fastbias sweep`` in subprocesses and SIGKILL them, at the
K-th file write (``FASTBIAS_FAILPOINT``, see ``fastbias.store``) or after a random delay,
then run the same command again until it finishes; the folder must then hold exactly
what an uninterrupted sweep writes (timing columns, ``*_seconds``, excepted).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

import fastbias
from fastbias import store, sweep
from fastbias.cli import main
from fastbias.data import gaussian_dataset

SPEC = """\
[sweep]
arch = ["conv", "diag", "fc"]
depth = [2, 3]
n = 8
d = 9
seed = [0, 1]
steps = 2000
checkpoint_every = 500
checkpoint_seconds = 0
"""


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def snapshot(out):
    """Everything a sweep leaves in ``out`` except timings: the summary's columns and
    every run file's arrays, as bytes; and the list of files."""
    summary = store.read_parquet(os.path.join(out, "summary.parquet"))
    summary = {k: v for k, v in summary.items() if not k.endswith("_seconds")}
    runs = {}
    for rid in summary["id"]:
        arrays = store.load_npz(os.path.join(out, "runs", f"{rid}.npz"))
        row = json.loads(str(arrays.pop("summary")))
        runs[rid] = {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in arrays.items()}
        runs[rid]["summary"] = json.dumps({k: v for k, v in row.items() if not k.endswith("_seconds")},
                                          sort_keys=True, allow_nan=True)
    files = sorted(os.listdir(os.path.join(out, "runs")))
    return json.dumps(summary, sort_keys=True, allow_nan=True), runs, files


def _assert_same(a, b):
    assert a[2] == b[2], "different run files"
    assert a[0] == b[0], "summary.parquet differs"
    for rid in a[1]:
        assert a[1][rid] == b[1][rid], f"run {rid} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted sweep of SPEC, in this process."""
    base = tmp_path_factory.mktemp("reference")
    spec = _write(base / "spec.toml", SPEC)
    res = sweep.run_sweep(spec, base / "out", workers=1, progress=False)
    assert res["ran"] == 12 and res["skipped"] == 0
    return spec, str(base / "out"), snapshot(base / "out")


# --------------------------------------------------------------------------- results


def test_reference_results(reference):
    spec, out, snap = reference
    s = store.read_parquet(os.path.join(out, "summary.parquet"))
    assert s["id"] == [f"{i:04d}" for i in range(12)]
    assert sorted(set(zip(s["arch"], s["depth"]))) == [(a, L) for a in ("conv", "diag", "fc") for L in (2, 3)]
    assert all(v == "completed" for v in s["status"]) and all(v == 2000 for v in s["steps_done"])
    assert all(e == "" for e in s["theory_error"])
    for i, (arch, depth) in enumerate(zip(s["arch"], s["depth"])):
        assert 0 < s["one_minus_cos_predicted"][i] < 1 and np.isfinite(s["kkt_residual"][i])
        assert s["p"][i] == (2.0 if arch == "fc" else 2.0 / depth)
        assert np.isnan(s["cos_stationary"][i])  # stationary = false
    assert [k for k in s if k.endswith("_seconds")] == ["setup_seconds", "gd_seconds", "theory_seconds"]
    assert sorted(os.listdir(os.path.join(out, "runs"))) == [f"{i:04d}.npz" for i in range(12)]  # no checkpoints left
    env = json.load(open(os.path.join(out, "environment.json")))["sessions"][-1]
    assert env["packages"]["numpy"] == np.__version__ and env["cpu_count"] >= 1 and "cpu" in env
    assert open(os.path.join(out, "spec.toml")).read() == SPEC
    # a run's predicted direction is what fastbias.theory predicts for its dataset
    from fastbias import theory

    run = sweep.read_run(out, "0002")  # conv, depth 3, seed 0
    X, y = gaussian_dataset(8, 9, 0)
    pred = theory.predicted(X, y, "conv", 3)
    assert np.array_equal(run["beta_predicted"], pred.beta)
    cos = run["beta"] @ pred.beta / np.linalg.norm(run["beta"]) / np.linalg.norm(pred.beta)
    assert run["summary"]["cos_predicted"] == pytest.approx(cos, rel=1e-12)


def test_stationary_point_from_beta_T():
    from fastbias import theory

    X, y = gaussian_dataset(8, 9, 1)
    for arch, depth in (("conv", 3), ("diag", 3), ("conv", 2)):
        row, arrays = sweep.run_one({"arch": arch, "depth": depth, "n": 8, "d": 9, "seed": 1, "steps": 2000,
                                     "stationary": True}, progress=False)
        if depth == 2:  # convex: the prediction is the only stationary point
            assert np.isnan(row["cos_stationary"]) and "beta_stationary" not in arrays
            continue
        near = theory.predicted(X, y, arch, depth, start=arrays["beta"])
        assert np.array_equal(arrays["beta_stationary"], near.beta)
        assert row["stationary_residual"] == near.certificate.residual
    with pytest.raises(sweep.SpecError, match="'stationary' needs theory = true"):
        sweep.run_one({"arch": "conv", "n": 4, "d": 4, "steps": 5, "stationary": True, "theory": False})


def _fit_like(r, X, y, **kw):
    """The run of configuration ``r`` by one uninterrupted ``fit_many`` call (whose runs the
    sweep makes: for diag/conv it equals ``fit`` only to rounding, its SIMD-lane loop
    summing in another order)."""
    return fastbias.fit_many(X, y, seeds=[r["seed"]], arch=r["arch"], depth=r["depth"], widths=r["widths"],
                             loss=r["loss"], steps=r["steps"], step=r["step"], step_size=r["step_size"],
                             init_scale=r["init_scale"], record=r["record"], **kw)[0]


@pytest.mark.parametrize("record", ["log", "last", 130])
def test_chunked_runs_equal_uninterrupted(tmp_path, record):
    """Runs advanced in chunks of 97 steps, checkpointed at every chunk, have the bits of
    an uninterrupted engine run (beta and every history row), also for runs that share a
    dataset file, fc widths, the linear predictor, and runs that stop early."""
    Xs, ys = gaussian_dataset(7, 6, seed=3)
    np.savez(tmp_path / "sep.npz", X=Xs, y=ys)
    rng = np.random.default_rng(1)
    Xn, yn = rng.standard_normal((10, 4)), np.sign(rng.standard_normal(10))
    np.savez(tmp_path / "nonsep.npz", X=Xn, y=yn)
    specs = [
        {"arch": ["conv", "diag"], "depth": [1, 2, 4], "n": 6, "d": 7, "seed": [0, 5], "steps": 1000},
        {"arch": "fc", "depth": 3, "widths": [[3, 5], [7, 2]], "data": "sep.npz", "seed": [0, 1, 2], "steps": 1000},
        {"arch": "linear", "data": "sep.npz", "seed": [0, 1], "steps": 1000, "step": "fixed", "step_size": 0.01},
        # fixed steps of 50 diverge after ~70 steps: the run stops inside a chunk
        {"arch": ["diag", "conv", "fc"], "data": "nonsep.npz", "loss": "logistic", "step": "fixed",
         "step_size": 50.0, "seed": 0, "steps": 1000},
    ]
    for k, table in enumerate(specs):
        table = {**table, "record": record, "theory": False, "checkpoint_every": 97, "checkpoint_seconds": 0}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # non-separable logistic data
            spec = sweep.spec_from_dict({"sweep": table}, base=str(tmp_path))
            sweep.run_sweep(spec, tmp_path / f"out{k}", workers=1, progress=False)
        for r in spec.runs:
            got = sweep.read_run(tmp_path / f"out{k}", r["id"])
            if r["data"] == "gaussian":
                X, y = gaussian_dataset(r["n"], r["d"], r["seed"])
            else:
                X, y = (Xs, ys) if r["data"] == "sep.npz" else (Xn, yn)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                one = _fit_like(r, X, y, allow_nonseparable=True)
            h1, h2 = got["history"], one.history
            assert h1.dtype == h2.dtype and h1.tobytes() == h2.tobytes(), (k, r["id"])
            with np.errstate(invalid="ignore", over="ignore"):  # the diverged runs' beta
                assert got["beta"].tobytes() == one.beta.tobytes()
            status = "completed" if one.status == "running" else one.status
            assert got["summary"]["status"] == status and got["summary"]["steps_done"] == one.steps_done
            if k == 3:
                assert one.status == "nonfinite" and 0 < one.steps_done < 1000


# --------------------------------------------------------------------------- crash safety


def _sweep_cmd(spec, out, *extra):
    return [sys.executable, "-m", "fastbias", "sweep", spec, "--out", out, "--quiet", *extra]


def _run(cmd, failpoint=None, timeout=300):
    env = dict(os.environ)
    env.pop(store.FAILPOINT_ENV, None)
    if failpoint:
        env[store.FAILPOINT_ENV] = failpoint
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_sigkill_at_writes_then_resume(reference, tmp_path):
    """SIGKILL in the middle of a write, before and after the rename, at several points
    of the sweep; each rerun resumes; the end result is the uninterrupted sweep's."""
    spec, _, ref = reference
    out = str(tmp_path / "out")
    kills = 0
    resumed_from_checkpoints = False
    # the K-th atomic write of each session: sweep.json, spec.toml, environment.json, then
    # checkpoints (6 runs of a batch, 4 chunks each) and the runs' results
    for k, phase in [(1, "partial"), (2, "before_replace"), (9, "partial"), (17, "after_replace"),
                     (30, "before_replace"), (26, "partial")]:
        p = _run(_sweep_cmd(spec, out, "--workers", "1"), failpoint=f"{k}:{phase}")
        assert p.returncode in (-signal.SIGKILL, 0), p.stderr
        kills += p.returncode == -signal.SIGKILL
        runs = os.listdir(os.path.join(out, "runs")) if os.path.isdir(os.path.join(out, "runs")) else []
        resumed_from_checkpoints |= any(f.endswith(".ckpt.npz") for f in runs)
        if p.returncode == 0:
            break
    assert kills >= 5 and resumed_from_checkpoints
    p = _run(_sweep_cmd(spec, out, "--workers", "1"))
    assert p.returncode == 0, p.stderr
    _assert_same(snapshot(out), ref)
    assert not [f for f in os.listdir(out) if f.endswith(store.TEMP_SUFFIX)]
    # a finished sweep run again redoes nothing
    p = _run(_sweep_cmd(spec, out))
    assert p.returncode == 0 and "0 runs in" in p.stdout and "12 finished before" in p.stdout
    _assert_same(snapshot(out), ref)


def _written_since(out, t):
    folder = os.path.join(out, "runs")
    try:
        return any(os.stat(os.path.join(folder, f)).st_mtime > t for f in os.listdir(folder))
    except FileNotFoundError:
        return False


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_sigkill_at_random_times_with_worker_processes(reference, tmp_path):
    """SIGKILL to the sweep process (2 worker processes) at random times; rerun with
    another worker count; the result is the uninterrupted sweep's."""
    spec, _, ref = reference
    out = str(tmp_path / "out")
    rng = random.Random(7)
    for workers in ("2",):
        p = subprocess.Popen(_sweep_cmd(spec, out, "--workers", workers), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        started = time.time()
        try:
            # once this session's workers write (a checkpoint or a result), kill it within a second
            deadline = time.monotonic() + 120
            while not _written_since(out, started) and p.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
            deadline = time.monotonic() + 30
            while _group_alive(p.pid):  # the worker processes end with the sweep (watchdog)
                assert time.monotonic() < deadline, "worker processes outlived the sweep"
                time.sleep(0.1)
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    p = _run(_sweep_cmd(spec, out, "--workers", "1"))
    assert p.returncode == 0, p.stderr
    _assert_same(snapshot(out), ref)


def test_atomic_write_exception_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    store.atomic_write(path, b"old")
    for target in ("fsync", "replace"):
        with monkeypatch.context() as m:
            def boom(*a, **k):
                raise OSError(f"{target} failed")

            m.setattr(os, target, boom)
            with pytest.raises(OSError, match=target):
                store.atomic_write(path, b"new content")
        assert path.read_bytes() == b"old"
        assert os.listdir(tmp_path) == ["f.bin"]  # no temporary file left
    with pytest.raises(TypeError, match="bytes"):
        store.atomic_write(path, "text")
    store.atomic_write(tmp_path / "g.bin", b"x")
    assert (tmp_path / "g.bin").read_bytes() == b"x"


@pytest.mark.parametrize("phase,expect", [("partial", b"old"), ("before_replace", b"old"),
                                          ("after_replace", b"0123456789" * 1000)])
def test_atomic_write_sigkill(tmp_path, phase, expect):
    """A process killed while writing leaves the old file or the new one, whole."""
    path = tmp_path / "f.bin"
    store.atomic_write(path, b"old")
    code = (f"from fastbias import store; store.atomic_write({str(path)!r}, b'0123456789' * 1000); "
            "print('survived')")
    p = _run([sys.executable, "-c", code], failpoint=f"1:{phase}")
    assert p.returncode == -signal.SIGKILL and "survived" not in p.stdout
    assert path.read_bytes() == expect
    temps = [f for f in os.listdir(tmp_path) if f.endswith(store.TEMP_SUFFIX)]
    assert len(temps) == (0 if phase == "after_replace" else 1)
    if phase == "partial":
        assert (tmp_path / temps[0]).read_bytes() == b"0123456789" * 500  # only the half it wrote
    store.remove_stale_temps(tmp_path)
    assert os.listdir(tmp_path) == ["f.bin"]


# --------------------------------------------------------------------------- Dask


def test_dask_local_cluster_equals_local(reference, tmp_path):
    """The sweep on a real dask.distributed LocalCluster (by address, and --dask local with
    worker processes) is bit for bit the local sweep."""
    from distributed import LocalCluster

    spec, _, ref = reference
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        res = sweep.run_sweep(spec, tmp_path / "by_address", dask=cluster.scheduler_address, progress=False)
    assert res["ran"] == 12
    _assert_same(snapshot(tmp_path / "by_address"), ref)
    sweep.run_sweep(spec, tmp_path / "local_cluster", dask="local", workers=2, progress=False)
    _assert_same(snapshot(tmp_path / "local_cluster"), ref)
    env = json.load(open(tmp_path / "local_cluster" / "environment.json"))["sessions"][-1]
    assert env["backend"] == "dask-local" and env["workers"] == 2


# --------------------------------------------------------------------------- validation


GOOD = {"arch": "conv", "n": 6, "d": 7, "steps": 10}


@pytest.mark.parametrize("change,match", [
    ({"archs": "conv"}, r"unknown spec key\(s\) \['archs'\]"),
    ({"arch": "cnn"}, "spec key 'arch' must be one of"),
    ({"arch": ["conv", 3]}, "spec key 'arch' must be one of"),
    ({"depth": 0}, "spec key 'depth' must be >= 1"),
    ({"depth": 2.5}, "spec key 'depth' must be an integer"),
    ({"depth": True}, "spec key 'depth' must be an integer"),
    ({"arch": ["linear", "conv"], "depth": [2]}, "arch='linear' has depth 1"),
    ({"seed": -1}, "spec key 'seed' must be >= 0"),
    ({"seed": []}, "spec key 'seed' is an empty list"),
    ({"seed": [1, 2, 1]}, "spec key 'seed' lists 1 twice"),
    ({"steps": 0}, "spec key 'steps' must be >= 1"),
    ({"loss": "hinge"}, "spec key 'loss' must be one of"),
    ({"step": "armijo"}, "spec key 'step' must be one of"),
    ({"step": "fixed"}, "'step_size' is required for step='fixed'"),
    ({"step_size": 2.0}, "c < 2"),
    ({"step_size": -1}, "spec key 'step_size' must be a positive finite number"),
    ({"init_scale": "big"}, "spec key 'init_scale' must be a positive number"),
    ({"widths": [4]}, "applies to arch='fc' only"),
    ({"arch": "fc", "depth": 3, "widths": [4]}, "must list the 2 hidden widths"),
    ({"arch": "fc", "width": 4, "widths": [4]}, "not both"),
    ({"arch": "fc", "width": [0, 3]}, "spec key 'width' must be >= 1"),
    ({"record": "often"}, "spec key 'record' must be one of"),
    ({"record": 0}, "spec key 'record' must be >= 1"),
    ({"theory": "yes"}, "spec key 'theory' must be true or false"),
    ({"n": None}, "spec key 'n' is required for data='gaussian'"),
    ({"checkpoint_every": [10, 20]}, "'checkpoint_every' must be one number"),
    ({"checkpoint_seconds": -1}, "'checkpoint_seconds' must be a number >= 0"),
    ({"data": "missing.npz"}, "no file"),
    ({"data": "data.csv"}, "path of an .npz file"),
    ({"steps": None}, "spec key 'steps' is required"),
])
def test_spec_errors(change, match):
    table = {**GOOD, **change}
    table = {k: v for k, v in table.items() if v is not None}
    with pytest.raises(sweep.SpecError, match=match):
        sweep.spec_from_dict({"sweep": table})


def test_spec_errors_data_files_and_toml(tmp_path):
    X, y = gaussian_dataset(6, 5, seed=0)
    np.savez(tmp_path / "noy.npz", X=X)
    np.savez(tmp_path / "ok.npz", X=X, y=y)
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "nonsep.npz", X=rng.standard_normal((10, 3)), y=np.sign(rng.standard_normal(10)))
    np.savez(tmp_path / "labels.npz", X=X, y=y * 2)
    base = str(tmp_path)
    cases = [({"data": "noy.npz"}, "must hold arrays 'X'"),
             ({"data": "labels.npz"}, r"y must contain only \+1 and -1"),
             ({"data": "nonsep.npz"}, "not linearly separable"),
             ({"data": "ok.npz", "n": 7}, "spec key 'n' is 7 but the data file"),
             ({"data": ["ok.npz", "gaussian"]}, "spec key 'n' is required for data='gaussian'")]
    for change, match in cases:
        with pytest.raises(sweep.SpecError, match=match):
            sweep.spec_from_dict({"sweep": {"arch": "conv", "steps": 5, **change}}, base=base)
    spec = sweep.spec_from_dict({"sweep": {"arch": "conv", "steps": 5, "data": "ok.npz", "seed": [0, 1]}}, base=base)
    assert [(r["n"], r["d"]) for r in spec.runs] == [(6, 5), (6, 5)]
    with pytest.warns(RuntimeWarning, match="not linearly separable"):
        sweep.spec_from_dict({"sweep": {"arch": "conv", "steps": 5, "data": "nonsep.npz", "loss": "logistic"}},
                             base=base)
    for text, match in [("[sweep]\narch = 'conv'\nsteps = \n", "not valid TOML"),
                        ("arch = 'conv'\n", r"needs a \[sweep\] table"),
                        ("[sweep]\narch = 'conv'\nsteps = 5\n[extra]\nx = 1\n", "unknown top-level")]:
        with pytest.raises(sweep.SpecError, match=match):
            sweep.load_spec(_write(tmp_path / "bad.toml", text))
    with pytest.raises(sweep.SpecError, match="does not exist"):
        sweep.load_spec(tmp_path / "none.toml")


def test_grid_and_fingerprint():
    spec = sweep.spec_from_dict({"sweep": {"arch": ["fc", "conv"], "depth": [2, 3], "n": 5, "d": 4,
                                           "seed": [0, 1, 2], "steps": 10, "checkpoint_every": 3}})
    assert len(spec) == 12
    assert [(r["arch"], r["depth"], r["seed"]) for r in spec.runs[:4]] == [("fc", 2, 0), ("fc", 2, 1), ("fc", 2, 2),
                                                                          ("fc", 3, 0)]
    assert spec.runs[0]["init_scale"] == 0.5 and spec.runs[0]["step_size"] == 1.0
    # the same runs written differently: same fingerprint; execution keys do not count
    same = sweep.spec_from_dict({"sweep": {"seed": [0, 1, 2], "depth": [2, 3], "arch": ["fc", "conv"], "n": [5],
                                           "d": 4, "steps": 10, "loss": "exp", "init_scale": 0.5}})
    assert same.fingerprint == spec.fingerprint
    other = sweep.spec_from_dict({"sweep": {"arch": ["fc", "conv"], "depth": [2, 3], "n": 5, "d": 4,
                                            "seed": [0, 1, 2], "steps": 11}})
    assert other.fingerprint != spec.fingerprint
    fc = sweep.spec_from_dict({"sweep": {"arch": "fc", "depth": [2, 3], "width": 6, "n": 5, "d": 4, "steps": 3}})
    assert [r["widths"] for r in fc.runs] == [[6], [6, 6]]


def test_folder_refusals(reference, tmp_path):
    spec, out, _ = reference
    other = _write(tmp_path / "other.toml", SPEC.replace("steps = 2000", "steps = 2001"))
    with pytest.raises(sweep.SpecError, match="holds a different sweep"):
        sweep.run_sweep(other, out, progress=False)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(sweep.SpecError, match="not empty and holds no fastbias sweep"):
        sweep.run_sweep(spec, tmp_path / "foreign", progress=False)
    assert os.listdir(tmp_path / "foreign") == ["notes.txt"]
    with store.folder_lock(out):
        p = _run(_sweep_cmd(spec, out))
    assert p.returncode == 2 and "another fastbias process is writing" in p.stderr
    p = _run(_sweep_cmd(other, out))
    assert p.returncode == 2 and "holds a different sweep" in p.stderr
    with pytest.raises(ValueError, match="workers"):
        sweep.run_sweep(spec, out, workers=0, progress=False)


# --------------------------------------------------------------------------- CLI


def test_cli_run_and_plot(reference, tmp_path, capsys):
    _, out, _ = reference
    hist = tmp_path / "h.npz"
    assert main(["run", "--arch", "conv", "--depth", "3", "--n", "8", "--d", "9", "--seed", "1",
                 "--steps", "2000", "--out", str(hist), "--quiet"]) == 0
    row = json.loads(capsys.readouterr().out)
    ref = sweep.read_run(out, "0003")  # the sweep's run of the same configuration
    assert {k: v for k, v in row.items() if not k.endswith("_seconds")} == \
        {k: v for k, v in ref["summary"].items() if not k.endswith("_seconds") and k != "id"}
    saved = store.load_npz(hist)
    assert saved["history"].tobytes() == ref["history"].tobytes()
    assert main(["run", "--arch", "linear", "--depth", "2", "--n", "4", "--d", "3", "--steps", "5",
                 "--out", str(hist), "--quiet"]) == 2
    assert "arch='linear' has depth 1" in capsys.readouterr().err
    assert main(["plot", out, "--quiet"]) == 0
    paths = capsys.readouterr().out.split()
    assert [os.path.basename(p) for p in paths] == ["fig_convergence.png", "fig_final.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path), "--quiet"]) == 2
