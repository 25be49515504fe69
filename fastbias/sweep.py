"""Sweeps: grids of gradient-descent runs from a TOML spec, resumable and crash safe.

A spec holds one ``[sweep]`` table. Keys with a list value form the grid (the
cartesian product of their values), scalars apply to every run::

    [sweep]
    arch = ["conv", "diag", "fc"]
    depth = [2, 3]
    n = 12
    d = 16
    seed = [0, 1, 2, 3]
    steps = 200000
    loss = "exp"
    step = "adaptive"

``run_sweep(spec, out)`` validates every run of the grid before anything runs, then
runs them in batched engine calls (tasks of runs that share a configuration, the
runs of one dataset in one ``fit_many`` call) on local worker processes or on a
Dask cluster, and writes to ``out``:

* ``summary.parquet``: one row per run (``SUMMARY_COLUMNS``);
* ``runs/<id>.npz``: the run's history (``history``), final predictor (``beta``),
  predictions and its summary row as JSON (``summary``);
* ``spec.toml`` (the spec as given), ``sweep.json`` (the runs and the sweep's
  fingerprint), ``data/<sha256>.npz`` (copies of the data files),
  ``environment.json`` (package versions, CPU, backend, one entry per session).

Crash safety: every file is written atomically (``fastbias.store``); each run is
advanced in chunks of ``checkpoint_every`` steps and its state is saved to
``runs/<id>.ckpt.npz`` at the end of a chunk once ``checkpoint_seconds`` have passed
since the last save. Running the same spec again skips finished runs and continues
checkpointed ones. A run's results are a function of its configuration only (the
engine's results do not depend on the batch, the chunks or the thread count, and the
history keeps the rows of an uninterrupted ``fit``), so a sweep killed at any moment
and run again ends bit for bit where an uninterrupted one does; only the columns whose
names end in ``_seconds`` (timings) differ.
"""

import hashlib
import itertools
import json
import math
import numbers
import os
import sys
import time
import warnings

import numpy as np

from fastbias import store

FORMAT = 1
ARCHS = ("linear", "fc", "diag", "conv")
LOSSES = ("exp", "logistic")
STEP_POLICIES = ("adaptive", "fixed")
# the grid's order: the last key varies fastest (runs of one configuration over seeds are neighbours)
GRID_KEYS = ("data", "arch", "depth", "width", "widths", "n", "d", "loss", "step", "step_size",
             "init_scale", "steps", "record", "theory", "stationary", "seed")
# keys that change how a sweep runs, never its results (left out of the fingerprint)
EXEC_KEYS = {"checkpoint_every": 100_000, "checkpoint_seconds": 60.0}
MAX_TASK_RUNS = 16

SUMMARY_COLUMNS = (
    # the run's configuration
    ("id", "string"), ("arch", "string"), ("depth", "int64"), ("widths", "string"), ("data", "string"),
    ("n", "int64"), ("d", "int64"), ("seed", "int64"), ("steps", "int64"), ("loss", "string"),
    ("step", "string"), ("step_size", "float64"), ("init_scale", "float64"), ("record", "string"),
    ("theory", "bool"), ("stationary", "bool"),
    # where gradient descent ended (the last history row)
    ("status", "string"), ("steps_done", "int64"), ("halvings", "int64"), ("log_loss", "float64"),
    ("min_margin", "float64"), ("normalized_margin", "float64"), ("beta_norm", "float64"),
    ("weight_norm", "float64"), ("last_step_size", "float64"),
    # against the theory (fastbias.theory)
    ("prediction", "string"), ("p", "float64"), ("domain", "string"), ("penalty_norm", "float64"),
    ("margin_p", "float64"), ("margin_p_predicted", "float64"),
    ("cos_l2", "float64"), ("one_minus_cos_l2", "float64"),
    ("cos_predicted", "float64"), ("one_minus_cos_predicted", "float64"), ("predicted_residual", "float64"),
    ("cos_stationary", "float64"), ("one_minus_cos_stationary", "float64"), ("stationary_residual", "float64"),
    ("kkt_residual", "float64"), ("kkt_part", "string"), ("theory_error", "string"),
    # timings (the only columns that differ between two runs of one spec)
    ("setup_seconds", "float64"), ("gd_seconds", "float64"), ("theory_seconds", "float64"),
)


class SpecError(ValueError):
    """A sweep spec that cannot run; the message names the key."""


# --------------------------------------------------------------------------- spec


def _toml_load(path):
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SpecError(f"spec file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec file {path!r} is not valid TOML: {exc}") from None


def _int(value, key, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"spec key {key!r} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise SpecError(f"spec key {key!r} must be >= {minimum}, got {value}")
    return int(value)


def _positive(value, key):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpecError(f"spec key {key!r} must be a positive number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise SpecError(f"spec key {key!r} must be a positive finite number, got {value}")
    return value


def _choice(value, key, choices):
    if not isinstance(value, str) or value not in choices:
        raise SpecError(f"spec key {key!r} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_value(key, value):
    """One value of a spec key, normalized; SpecError naming the key."""
    if key == "arch":
        return _choice(value, key, ARCHS)
    if key in ("depth", "n", "d", "width", "steps"):
        return _int(value, key, 1)
    if key == "seed":
        return _int(value, key, 0)
    if key == "loss":
        return _choice(value, key, LOSSES)
    if key == "step":
        return _choice(value, key, STEP_POLICIES)
    if key in ("step_size", "init_scale"):
        return _positive(value, key)
    if key == "widths":
        if not isinstance(value, list):
            raise SpecError(f"spec key 'widths' must list the hidden widths D_1..D_(L-1) of an fc net, got {value!r}")
        return [_int(w, "widths", 1) for w in value]
    if key == "record":
        if isinstance(value, str):
            return _choice(value, key, ("log", "last"))
        return _int(value, key, 1)
    if key in ("theory", "stationary"):
        if not isinstance(value, bool):
            raise SpecError(f"spec key {key!r} must be true or false, got {value!r}")
        return value
    if key == "data":
        if not isinstance(value, str) or not value:
            raise SpecError(f"spec key 'data' must be \"gaussian\" or the path of an .npz file, got {value!r}")
        return value
    raise AssertionError(key)


def _is_grid(key, value):
    if key == "widths":  # a list of ints is one fc net's widths; a list of lists is a grid
        return isinstance(value, list) and len(value) > 0 and all(isinstance(v, list) for v in value)
    return isinstance(value, list)


class Spec:
    """A validated sweep: ``runs`` (one dict per run, in grid order, with its ``id``),
    ``fingerprint`` (sha256 of the runs' configurations and data), ``text`` (the spec
    file as given), ``checkpoint_every`` / ``checkpoint_seconds``, ``data_files``
    ({sha256: absolute path})."""

    def __init__(self, runs, text, checkpoint_every, checkpoint_seconds, data_files, path=None):
        self.runs = runs
        self.text = text
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.data_files = data_files
        self.path = path
        blob = json.dumps({"format": FORMAT, "runs": [{k: v for k, v in r.items() if k != "id"} for r in runs]},
                          sort_keys=True)
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()

    def __len__(self):
        return len(self.runs)

    def __repr__(self):
        return f"Spec({len(self.runs)} runs, fingerprint={self.fingerprint[:12]})"


def load_spec(path):
    """Read and validate a sweep spec file; returns a ``Spec``. Every run of the grid is
    checked (values, combinations, data files, separability for the exponential loss)
    before anything runs; the first problem raises ``SpecError`` naming the key."""
    path = os.fspath(path)
    doc = _toml_load(path)
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    return spec_from_dict(doc, base=os.path.dirname(os.path.abspath(path)), text=text, path=path)


def spec_from_dict(doc, *, base=".", text=None, path=None):
    """``load_spec`` for an already parsed document ``{"sweep": {...}}``; relative data
    paths are taken from ``base``."""
    if not isinstance(doc, dict) or "sweep" not in doc:
        raise SpecError("the spec needs a [sweep] table")
    extra = sorted(set(doc) - {"sweep"})
    if extra:
        raise SpecError(f"unknown top-level key(s) or table(s) {extra}: the spec holds one [sweep] table")
    table = doc["sweep"]
    if not isinstance(table, dict):
        raise SpecError("[sweep] must be a table")
    unknown = sorted(set(table) - set(GRID_KEYS) - set(EXEC_KEYS))
    if unknown:
        raise SpecError(f"unknown spec key(s) {unknown}; known keys: {', '.join(GRID_KEYS + tuple(EXEC_KEYS))}")
    for key in ("arch", "steps"):
        if key not in table:
            raise SpecError(f"spec key {key!r} is required")
    if "width" in table and "widths" in table:
        raise SpecError("give spec key 'width' (one hidden width for every layer) or 'widths' (each layer's), not both")
    every = table.get("checkpoint_every", EXEC_KEYS["checkpoint_every"])
    if isinstance(every, list):
        raise SpecError("spec key 'checkpoint_every' must be one number of steps, not a list")
    every = _int(every, "checkpoint_every", 1)
    seconds = table.get("checkpoint_seconds", EXEC_KEYS["checkpoint_seconds"])
    if isinstance(seconds, list) or isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) \
            or not (math.isfinite(seconds) and seconds >= 0):
        raise SpecError(f"spec key 'checkpoint_seconds' must be a number >= 0, got {seconds!r}")

    axes = []
    for key in GRID_KEYS:
        if key not in table:
            continue
        value = table[key]
        if _is_grid(key, value):
            if not value:
                raise SpecError(f"spec key {key!r} is an empty list: give at least one value")
            values = [_check_value(key, v) for v in value]
            dup = [v for i, v in enumerate(values) if v in values[:i]]
            if dup:
                raise SpecError(f"spec key {key!r} lists {dup[0]!r} twice")
        else:
            values = [_check_value(key, value)]
        axes.append((key, values))
    keys = [k for k, _ in axes]

    data_cache = {}
    runs = []
    for combo in itertools.product(*(v for _, v in axes)):
        point = dict(zip(keys, combo))
        runs.append(_resolve(point, table, base, data_cache))
    width = max(4, len(str(len(runs) - 1)))
    for i, r in enumerate(runs):
        r["id"] = f"{i:0{width}d}"
    _check_engine(runs, data_cache)
    data_files = {info["sha256"]: info["path"] for info in data_cache.values() if info is not None}
    return Spec(runs, text, every, float(seconds), data_files, path)


def _where(point):
    return ", ".join(f"{k}={v!r}" for k, v in point.items())


def _resolve(point, table, base, data_cache):
    """One run's full configuration from a grid point (defaults filled in, combinations checked)."""
    where = _where(point)
    arch = point["arch"]
    depth = point.get("depth", 1 if arch == "linear" else 2)
    if arch == "linear" and depth != 1:
        raise SpecError(f"spec key 'depth': arch='linear' has depth 1, got depth={depth} (at {where}); "
                        "use arch='fc' for deep networks (fc with depth 1 is the linear predictor too)")
    widths = None
    if "width" in point or "widths" in point:
        key = "width" if "width" in point else "widths"
        if arch != "fc":
            raise SpecError(f"spec key {key!r} applies to arch='fc' only, got arch={arch!r} (at {where})")
        widths = [point["width"]] * (depth - 1) if key == "width" else list(point["widths"])
        if len(widths) != depth - 1:
            raise SpecError(f"spec key 'widths' must list the {depth - 1} hidden widths of a depth-{depth} fc net, "
                            f"got {len(widths)} (at {where})")
    data = point.get("data", "gaussian")
    run = {"data": data, "arch": arch, "depth": depth, "widths": widths}
    if data == "gaussian":
        for key in ("n", "d"):
            if key not in point:
                raise SpecError(f"spec key {key!r} is required for data='gaussian' (at {where})")
        run["n"], run["d"] = point["n"], point["d"]
        run["data_sha256"] = None
    else:
        info = _data_file(data, base, data_cache)
        for key, size in (("n", info["n"]), ("d", info["d"])):
            if key in point and point[key] != size:
                raise SpecError(f"spec key {key!r} is {point[key]} but the data file {data!r} has {key} = {size} "
                                f"(leave {key} out to take it from the file)")
        run["n"], run["d"] = info["n"], info["d"]
        run["data_sha256"] = info["sha256"]
    run["loss"] = point.get("loss", "exp")
    run["step"] = point.get("step", "adaptive")
    if run["step"] == "fixed":
        if "step_size" not in point:
            raise SpecError(f"spec key 'step_size' is required for step='fixed' (the learning rate; at {where})")
        run["step_size"] = point["step_size"]
    else:
        run["step_size"] = point.get("step_size", 1.0)
        if run["step_size"] >= 2.0:
            raise SpecError(f"spec key 'step_size': step='adaptive' certifies eta = c / (L S) only for c < 2, "
                            f"got {run['step_size']} (at {where})")
    run["init_scale"] = point.get("init_scale", 1.0 / math.sqrt(run["d"]))
    run["steps"] = point["steps"]
    run["record"] = point.get("record", "log")
    run["theory"] = point.get("theory", True)
    run["stationary"] = point.get("stationary", False)
    if run["stationary"] and not run["theory"]:
        raise SpecError(f"spec key 'stationary' needs theory = true (at {where})")
    run["seed"] = point.get("seed", 0)
    if data != "gaussian" and not data_cache[data]["separable"]:
        if run["loss"] == "exp":
            raise SpecError(f"spec key 'data': {data!r} is not linearly separable, so the exponential loss has no "
                            "minimizer direction; use loss='logistic'")
        if not data_cache[data].get("warned"):
            data_cache[data]["warned"] = True
            warnings.warn(f"the data {data!r} are not linearly separable: logistic GD converges to a finite "
                          "minimizer, not a max-margin direction (the theory columns stay empty)",
                          RuntimeWarning, stacklevel=4)
    return run


def _data_file(data, base, cache):
    if data in cache:
        return cache[data]
    path = data if os.path.isabs(data) else os.path.join(base, data)
    if not path.endswith(".npz"):
        raise SpecError(f"spec key 'data' must be \"gaussian\" or the path of an .npz file with arrays X and y, "
                        f"got {data!r}")
    if not os.path.isfile(path):
        raise SpecError(f"spec key 'data': no file {path!r}")
    with open(path, "rb") as f:
        blob = f.read()
    try:
        arrays = store.load_npz(path)
    except Exception as exc:  # a broken or pickled archive
        raise SpecError(f"spec key 'data': {path!r} is not a readable .npz of plain arrays ({exc})") from None
    if "X" not in arrays or "y" not in arrays:
        raise SpecError(f"spec key 'data': {path!r} must hold arrays 'X' (N, D) and 'y' (N,), has {sorted(arrays)}")
    from fastbias.data import check_dataset, is_separable

    try:
        X, y = check_dataset(arrays["X"], arrays["y"])
    except (TypeError, ValueError) as exc:
        raise SpecError(f"spec key 'data': {path!r}: {exc}") from None
    info = {"path": os.path.abspath(path), "sha256": hashlib.sha256(blob).hexdigest(), "n": X.shape[0],
            "d": X.shape[1], "separable": is_separable(X, y)}
    cache[data] = info
    return info


def _check_engine(runs, data_cache):
    """Every distinct engine configuration through the engine's own validation
    (``fit_many(..., steps=0)`` on a small stand-in dataset), and the exponential
    loss's separability for every Gaussian dataset (by its teacher: no LP)."""
    from fastbias import checkpoint

    seen = set()
    for r in runs:
        key = (r["arch"], r["depth"], json.dumps(r["widths"]), r["loss"], r["step"], r["step_size"],
               r["init_scale"], json.dumps(r["record"]), r["d"])
        if key in seen:
            continue
        seen.add(key)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((2, r["d"]))
        y = np.sign(X @ rng.standard_normal(r["d"]))
        y[y == 0] = 1.0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                checkpoint.new_runs(X, y, [0], **_engine_kwargs(r), allow_nonseparable=True)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"run {r['id']} ({_describe(r)}): {exc}") from None
    for r in runs:
        if r["data"] == "gaussian" and r["loss"] == "exp":
            X, y, teacher = _gaussian(r["n"], r["d"], r["seed"])
            if not np.all(y * (X @ teacher) > 0):
                from fastbias.data import is_separable

                if not is_separable(X, y):
                    raise SpecError(f"run {r['id']} ({_describe(r)}): its Gaussian dataset is not linearly "
                                    "separable, so the exponential loss has no minimizer direction")


def _describe(r):
    return ", ".join(f"{k}={r[k]!r}" for k in ("arch", "depth", "n", "d", "seed") if k in r)


def _engine_kwargs(r):
    return dict(arch=r["arch"], depth=r["depth"], widths=r["widths"], loss=r["loss"], step=r["step"],
                step_size=r["step_size"], init_scale=r["init_scale"], record=r["record"])


# --------------------------------------------------------------------------- data


def _gaussian(n, d, seed):
    """``fastbias.data.gaussian_dataset(n, d, seed)`` and its teacher."""
    from fastbias.data import gaussian_dataset

    rng = np.random.default_rng(seed)
    rng.standard_normal((n, d))
    teacher = rng.standard_normal(d)
    X, y = gaussian_dataset(n, d, seed, teacher=teacher)
    return X, y, teacher


def _dataset_key(r):
    return ("gaussian", r["n"], r["d"], r["seed"]) if r["data"] == "gaussian" else ("file", r["data_sha256"])


def _load_dataset(r, out):
    if r["data"] == "gaussian":
        X, y, _ = _gaussian(r["n"], r["d"], r["seed"])
        return X, y
    arrays = store.load_npz(os.path.join(out, "data", r["data_sha256"] + ".npz"))
    from fastbias.data import check_dataset

    return check_dataset(arrays["X"], arrays["y"])


# --------------------------------------------------------------------------- theory


_THEORY = {}


def _dataset_theory(key, X, y, arch, depth):
    """{"svm", "predicted": Prediction} or {"error": message}, cached per process (the
    SVM per dataset, the prediction per dataset, architecture and depth)."""
    k = (key, arch, depth)
    if k in _THEORY:
        return _THEORY[k]
    from fastbias import theory

    if len(_THEORY) > 512:
        _THEORY.clear()
    try:
        if (key, "svm") not in _THEORY:
            _THEORY[(key, "svm")] = theory.max_margin(X, y, "l2").beta
        out = {"svm": _THEORY[(key, "svm")], "predicted": theory.predicted(X, y, arch, depth)}
    except (ValueError, RuntimeError) as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    _THEORY[k] = out
    return out


def _references(th, d):
    if "error" in th:
        zero = np.zeros(d)  # the cos columns stay (NaN), so every run records the same columns
        return {"l2": zero, "predicted": zero}
    return {"l2": th["svm"], "predicted": th["predicted"].beta}


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if not (na > 0 and nb > 0):
        return math.nan, math.nan
    u, v = a / na, b / nb
    return float(u @ v), float(0.5 * np.sum((u - v) ** 2))


def _penalty_norm(beta, p, domain):
    z = np.abs(np.fft.fft(beta)) / math.sqrt(len(beta)) if domain == "fourier" else np.abs(beta)
    return float(np.sum(z ** p) ** (1.0 / p))


def _analyze(r, run, hist, X, y, th):
    """The run's summary row (without timings)."""
    last = hist[-1]
    row = {
        "id": r["id"], "arch": r["arch"], "depth": r["depth"],
        "widths": "" if r["widths"] is None else ",".join(map(str, r["widths"])),
        "data": r["data"], "n": r["n"], "d": r["d"], "seed": r["seed"], "steps": r["steps"],
        "loss": r["loss"], "step": r["step"], "step_size": float(r["step_size"]),
        "init_scale": float(r["init_scale"]), "record": str(r["record"]), "theory": r["theory"],
        "stationary": r["stationary"],
        "status": "completed" if run.status == "running" else run.status, "steps_done": int(run.steps_done), "halvings": int(run.halvings),
        "log_loss": float(last["log_loss"]), "min_margin": float(last["min_margin"]),
        "normalized_margin": float(last["normalized_margin"]), "beta_norm": float(last["beta_norm"]),
        "weight_norm": float(last["weight_norm"]), "last_step_size": float(last["step_size"]),
    }
    for name, kind in SUMMARY_COLUMNS:
        row.setdefault(name, "" if kind == "string" else math.nan)
    extra = {}
    if not r["theory"]:
        return row, extra
    if "error" in th:
        row["theory_error"] = th["error"]
        return row, extra
    from fastbias import theory

    beta = run.beta
    pred = th["predicted"]
    A = y[:, None] * X
    gamma = float(np.min(A @ beta))
    row["prediction"] = pred.problem
    row["p"], row["domain"] = float(pred.p), pred.domain
    row["penalty_norm"] = _penalty_norm(beta, pred.p, pred.domain)
    row["margin_p"] = gamma / row["penalty_norm"] if row["penalty_norm"] > 0 else math.nan
    row["margin_p_predicted"] = float(np.min(A @ pred.beta)) / _penalty_norm(pred.beta, pred.p, pred.domain)
    row["cos_l2"], row["one_minus_cos_l2"] = _cos(beta, th["svm"])
    row["cos_predicted"], row["one_minus_cos_predicted"] = _cos(beta, pred.beta)
    row["predicted_residual"] = float(pred.certificate.residual)
    extra["beta_predicted"] = pred.beta
    if not (gamma > 0):
        row["theory_error"] = "beta_T does not separate the data: no certificate"
        return row, extra
    try:
        cert = theory.kkt_residual(X, y, beta, pred.p, pred.domain)
        row["kkt_residual"] = float(cert.residual)
        row["kkt_part"] = max(cert.parts, key=cert.parts.get)
        if r["stationary"] and pred.p < 1.0:  # nonconvex: the stationary point nearest beta_T
            near = theory.predicted(X, y, r["arch"], r["depth"], start=beta)
            row["cos_stationary"], row["one_minus_cos_stationary"] = _cos(beta, near.beta)
            row["stationary_residual"] = float(near.certificate.residual)
            extra["beta_stationary"] = near.beta
    except (ValueError, RuntimeError) as exc:
        row["theory_error"] = f"{type(exc).__name__}: {exc}"
    return row, extra


# --------------------------------------------------------------------------- one task


def _final_path(out, rid):
    return os.path.join(out, "runs", f"{rid}.npz")


def _ckpt_path(out, rid):
    return os.path.join(out, "runs", f"{rid}.ckpt.npz")


def _batch_key(r):
    """Runs with equal keys can advance in one engine call."""
    return (r["data"] == "gaussian", r["arch"], r["depth"], json.dumps(r["widths"]), r["n"], r["d"], r["loss"],
            r["step"], json.dumps(r["record"]), r["steps"], r["theory"], r["stationary"])


def _build(configs, out, seconds, setup):
    """Fresh or restored runs for ``configs`` (one batch), grouped by dataset:
    [(config, Run, X, y, theory)]; ``seconds[id]`` gets the GD time spent before,
    ``setup[id]`` the run's share of the time to prepare its dataset and predictions."""
    from fastbias import checkpoint

    built = []
    order = sorted(configs, key=lambda r: (_dataset_key(r), r["init_scale"], r["step_size"], r["id"]))
    for (dkey, scale, size), group in itertools.groupby(
            order, key=lambda r: (_dataset_key(r), r["init_scale"], r["step_size"])):
        t0 = time.perf_counter()
        group = list(group)
        r0 = group[0]
        X, y = _load_dataset(r0, out)
        th = _dataset_theory(dkey, X, y, r0["arch"], r0["depth"]) if r0["theory"] else None
        refs = _references(th, r0["d"]) if r0["theory"] else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # non-separable logistic data: said up front
            runs = checkpoint.new_runs(X, y, [r["seed"] for r in group], **_engine_kwargs(r0),
                                       references=refs, allow_nonseparable=True)
        for r, run in zip(group, runs):
            seconds[r["id"]] = 0.0
            path = _ckpt_path(out, r["id"])
            if os.path.exists(path):
                saved = store.load_npz(path)
                try:
                    checkpoint.restore(run, saved)
                    seconds[r["id"]] = float(saved.get("gd_seconds", 0.0))
                except ValueError as exc:
                    warnings.warn(f"run {r['id']}: checkpoint {path} does not fit the run ({exc}); "
                                  "starting the run over", RuntimeWarning, stacklevel=2)
            built.append((r, run, X, y, th))
        for r in group:
            setup[r["id"]] = (time.perf_counter() - t0) / len(group)
    return built


def _save_checkpoint(out, r, run, gd_seconds):
    from fastbias import checkpoint

    arrays = checkpoint.state(run)
    arrays["gd_seconds"] = np.float64(gd_seconds)
    store.save_npz(_ckpt_path(out, r["id"]), arrays)


def execute(configs, out, *, every, seconds, threads=1, report=None):
    """Run ``configs`` (runs of one batch: see ``_batch_key``) to the end, checkpointing,
    and write each run's results. ``report(k)`` is told the steps done as they are done
    (a finished run counts its full ``steps``). Returns the runs' ids."""
    from fastbias import checkpoint

    report = report or (lambda k: None)
    configs = [r for r in configs if not os.path.exists(_final_path(out, r["id"]))]
    if not configs:
        return []
    secs, setup = {}, {}
    built = _build(configs, out, secs, setup)
    T = configs[0]["steps"]

    def progress(run):
        return T if run.status != "running" else run.steps_done

    done = {id(run): progress(run) for _, run, *_ in built}
    if any(done.values()):
        report(sum(done.values()))
    dirty = set()
    last_save = time.monotonic()
    while True:
        alive = [b for b in built if b[1].status == "running" and b[1].steps_done < T]
        if not alive:
            break
        t = min(b[1].steps_done for b in alive)
        group = [b for b in alive if b[1].steps_done == t]
        stop = min(T, (t // every + 1) * every)
        t0 = time.perf_counter()
        checkpoint.advance([b[1] for b in group], stop - t, threads)
        share = (time.perf_counter() - t0) / len(group)
        for r, run, *_ in group:
            secs[r["id"]] += share
            dirty.add(r["id"])
            now = progress(run)
            report(now - done[id(run)])
            done[id(run)] = now
        if time.monotonic() - last_save >= seconds:
            for r, run, *_ in built:
                if r["id"] in dirty:
                    _save_checkpoint(out, r, run, secs[r["id"]])
            dirty.clear()
            last_save = time.monotonic()
    ids = []
    for r, run, X, y, th in built:
        t0 = time.perf_counter()
        hist = checkpoint.history(run, T)
        with np.errstate(invalid="ignore", over="ignore"):  # a diverged run's beta is inf/NaN
            row, extra = _analyze(r, run, hist, X, y, th)
            beta = run.beta
        row["setup_seconds"] = setup[r["id"]]
        row["gd_seconds"] = secs[r["id"]]
        row["theory_seconds"] = time.perf_counter() - t0
        arrays = {"history": hist, "beta": beta,
                  "summary": np.str_(json.dumps(row, sort_keys=True, allow_nan=True))}
        arrays.update(extra)
        store.save_npz(_final_path(out, r["id"]), arrays)
        try:
            os.unlink(_ckpt_path(out, r["id"]))
        except FileNotFoundError:
            pass
        ids.append(r["id"])
    return ids


# --------------------------------------------------------------------------- the sweep folder


def _check_folder(spec, out):
    """True if ``out`` holds this sweep, False if it is new or empty; SpecError if it
    holds another sweep or anything else."""
    record = os.path.join(out, "sweep.json")
    if not os.path.isdir(out):
        return False
    entries = [e for e in os.listdir(out) if e != ".lock" and not (e.startswith(".") and e.endswith(store.TEMP_SUFFIX))]
    if os.path.exists(record):
        with open(record) as f:
            old = json.load(f)
        if old.get("fingerprint") != spec.fingerprint:
            raise SpecError(f"{out} holds a different sweep (fingerprint {str(old.get('fingerprint'))[:12]}, this "
                            f"spec {spec.fingerprint[:12]}): its results would be mixed with this spec's. Use another "
                            "--out folder, or delete this one to start over")
        resumed = True
    elif entries:
        raise SpecError(f"{out} is not empty and holds no fastbias sweep (no sweep.json); give an empty or new "
                        "--out folder")
    else:
        resumed = False
    return resumed


def _prepare_folder(spec, out):
    """Create or check ``out``: a fresh folder gets sweep.json, spec.toml and the data
    copies; a folder of the same sweep is resumed; anything else is refused."""
    record = os.path.join(out, "sweep.json")
    resumed = _check_folder(spec, out)
    if not resumed:  # first, so that a folder with anything of ours in it names its sweep
        store.atomic_write_json(record, {"format": FORMAT, "fingerprint": spec.fingerprint,
                                         "runs": spec.runs})
    for sub in ("runs", "data"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    for folder in (out, os.path.join(out, "runs"), os.path.join(out, "data")):
        store.remove_stale_temps(folder)
    for sha, path in spec.data_files.items():
        target = os.path.join(out, "data", sha + ".npz")
        if not os.path.exists(target):
            with open(path, "rb") as f:
                blob = f.read()
            if hashlib.sha256(blob).hexdigest() != sha:
                raise SpecError(f"data file {path} changed while the sweep was being set up")
            store.atomic_write(target, blob)
    if spec.text is not None:
        store.atomic_write_text(os.path.join(out, "spec.toml"), spec.text)
    return resumed


def _plan(pending, workers):
    """Tasks: runs of one batch key, at most MAX_TASK_RUNS each, about 4 per worker."""
    size = max(1, min(MAX_TASK_RUNS, math.ceil(len(pending) / (4 * max(1, workers)))))
    batches = {}
    for r in pending:
        batches.setdefault(_batch_key(r), []).append(r)
    tasks = []
    for runs in batches.values():
        runs = sorted(runs, key=lambda r: (_dataset_key(r), r["id"]))
        tasks += [runs[i:i + size] for i in range(0, len(runs), size)]
    return tasks


def _bar(total, progress, desc):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, desc=desc, dynamic_ncols=True, file=sys.stderr)


def run_sweep(spec, out, *, dask=None, workers=None, progress=True, log=None):
    """Run the sweep ``spec`` (a ``Spec`` or the path of a spec file) into the folder ``out``.

    Parameters
    ----------
    spec : Spec or path
    out : results folder; created, or resumed if it holds the same sweep
    dask : None (local worker processes), ``"local"`` (a ``dask.distributed.LocalCluster``)
        or the address of a running Dask scheduler (``"tcp://host:8786"``)
    workers : worker processes (local; default: the CPUs available) or LocalCluster workers
    progress : tqdm progress bar on stderr
    log : callable(str) for notes

    Returns
    -------
    dict with ``summary`` (path), ``runs``, ``skipped`` (finished before), ``ran``,
    ``steps`` (iterations done in this session), ``wall_seconds``
    """
    say = log or (lambda s: None)
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if dask not in (None, "local"):
            raise ValueError("workers applies to local runs and dask='local'; a running cluster has its own workers")
    if dask is not None and not isinstance(dask, str):
        raise TypeError(f"dask must be 'local' or a scheduler address, got {type(dask).__name__}")
    out = os.path.abspath(os.fspath(out))
    _check_folder(spec, out)  # refuse before leaving a lock file in someone else's folder
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    with store.folder_lock(out):
        resumed = _prepare_folder(spec, out)
        pending = [r for r in spec.runs if not os.path.exists(_final_path(out, r["id"]))]
        skipped = len(spec.runs) - len(pending)
        if resumed:
            say(f"{out}: resuming, {skipped} of {len(spec.runs)} runs finished before")
        backend = "local" if dask is None else ("dask-local" if dask == "local" else f"dask {dask}")
        session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "backend": backend,
                   "runs_pending": len(pending), **store.environment()}
        env_path = os.path.join(out, "environment.json")
        sessions = []
        if os.path.exists(env_path):
            with open(env_path) as f:
                sessions = json.load(f).get("sessions", [])
        sessions.append(session)
        store.atomic_write_json(env_path, {"sessions": sessions})
        steps_before = 0
        if pending:
            steps_before = _steps_checkpointed(pending, out)
            total = sum(r["steps"] for r in pending)
            bar = _bar(total, progress, "fastbias sweep")
            try:
                if dask is None:
                    n = workers or _cpus()
                    session["workers"] = n
                    _run_local(_plan(pending, n), out, spec, n, bar)
                else:
                    session["workers"] = _run_dask(pending, out, spec, dask, workers, bar, say)
            finally:
                if bar is not None:
                    bar.close()
        summary = write_summary(out, spec)
        wall = time.perf_counter() - t_start
        steps = _steps_done(pending, out) - steps_before
        session.update({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_seconds": wall,
                        "runs_done": len(pending), "run_iterations": steps})
        store.atomic_write_json(env_path, {"sessions": sessions})
    return {"summary": summary, "runs": len(spec.runs), "skipped": skipped, "ran": len(pending),
            "steps": steps, "wall_seconds": wall}


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _steps_checkpointed(runs, out):
    total = 0
    for r in runs:
        path = _ckpt_path(out, r["id"])
        if os.path.exists(path):
            with np.load(path, allow_pickle=False) as f:
                total += int(f["steps_done"])
    return total


def _steps_done(runs, out):
    total = 0
    for r in runs:
        with np.load(_final_path(out, r["id"]), allow_pickle=False) as f:
            total += int(json.loads(str(f["summary"]))["steps_done"])
    return total


def write_summary(out, spec=None):
    """``summary.parquet`` from the finished runs' files (in id order); returns its path.
    ``RuntimeError`` if a run of the sweep has no results yet."""
    import pyarrow as pa

    if spec is None:
        with open(os.path.join(out, "sweep.json")) as f:
            ids = [r["id"] for r in json.load(f)["runs"]]
    else:
        ids = [r["id"] for r in spec.runs]
    missing = [i for i in ids if not os.path.exists(_final_path(out, i))]
    if missing:
        raise RuntimeError(f"{len(missing)} run(s) of {out} have no results yet (first: {missing[0]}); "
                           "run the sweep again to finish them")
    cols = {name: [] for name, _ in SUMMARY_COLUMNS}
    for i in ids:
        row = read_run(out, i)["summary"]
        for name in cols:
            cols[name].append(row.get(name))
    types = {name: getattr(pa, "bool_" if kind == "bool" else kind)() for name, kind in SUMMARY_COLUMNS}
    return store.write_parquet(os.path.join(out, "summary.parquet"), cols, types)


def read_run(out, rid):
    """A finished run's arrays (``history``, ``beta``, ...) with ``summary`` as a dict."""
    arrays = store.load_npz(_final_path(out, rid))
    arrays["summary"] = json.loads(str(arrays["summary"]))
    return arrays


# --------------------------------------------------------------------------- backends


_QUEUE = None


def _worker_init(queue, parent):
    """In each local worker process: the progress queue, and a watchdog thread that ends
    the worker as soon as the sweep's process ``parent`` is gone (killed, even by
    SIGKILL), so no orphan keeps computing or writing."""
    global _QUEUE
    _QUEUE = queue
    import threading

    def watch():
        while True:
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, another user's: cannot be ours, so ours is gone
                os._exit(1)
            time.sleep(0.2)

    threading.Thread(target=watch, name="fastbias-watchdog", daemon=True).start()


def _task(configs, out, every, seconds, remote=False):
    """One task: a batch of runs; returns their ids. Runs in a worker process, whose
    BLAS is held to one thread (as in every backend: the theory's bits do not depend
    on the machine's thread count)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)
    queue = _QUEUE if not remote else None
    report = (lambda k: queue.put(k) if k else None) if queue is not None else None
    return execute(configs, out, every=every, seconds=seconds, threads=1, report=report)


_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def _run_local(tasks, out, spec, workers, bar):
    """Tasks on ``workers`` worker processes (one engine thread each), which end with this
    one; ``workers == 1`` runs them in this process."""
    update = bar.update if bar is not None else (lambda k: None)
    if workers == 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            for t in tasks:
                execute(t, out, every=spec.checkpoint_every, seconds=spec.checkpoint_seconds, report=update)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from queue import Empty

    if "forkserver" in mp.get_all_start_methods():
        # workers fork from a server that imported the engine and the theory once (not
        # from this process, whose threads a fork would copy half-way)
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["fastbias.sweep", "fastbias.checkpoint", "fastbias.theory"])
    else:
        ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    saved = {k: os.environ.get(k) for k in _BLAS_ENV}
    os.environ.update({k: "1" for k in _BLAS_ENV})  # inherited by the spawned workers
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(queue, os.getpid())) as pool:
            futures = {pool.submit(_task, t, out, spec.checkpoint_every, spec.checkpoint_seconds) for t in tasks}
            try:
                while futures:
                    done, futures = wait(futures, timeout=0.25, return_when=FIRST_COMPLETED)
                    _drain(queue, update, Empty)
                    for fut in done:
                        fut.result()
                _drain(queue, update, Empty)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _drain(queue, update, empty):
    while True:
        try:
            update(queue.get_nowait())
        except empty:
            return


def _run_dask(pending, out, spec, dask, workers, bar, say):
    """Tasks on a Dask cluster: a LocalCluster (``dask="local"``) or the scheduler at
    ``dask``. The workers write the run files into ``out``, which they must see (a
    shared file system on a cluster). Returns the number of worker threads."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if dask == "local":
        n = workers or _cpus()
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(dask)
    try:
        nthreads = sum(client.nthreads().values()) or 1
        (bar.write if bar is not None else say)(f"dask: {len(client.nthreads())} workers, {nthreads} threads at {client.scheduler.address}")
        tasks = _plan(pending, nthreads)
        futures = [client.submit(_task, t, out, spec.checkpoint_every, spec.checkpoint_seconds, True,
                                 pure=False) for t in tasks]
        steps = {f.key: sum(r["steps"] for r in t) for f, t in zip(futures, tasks)}
        for fut in as_completed(futures):
            fut.result()
            if bar is not None:
                bar.update(steps[fut.key])
        return nthreads
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------- one run


def run_one(config, *, out=None, progress=True, chunks=100):
    """One run from a configuration dict with the keys of a spec (scalars only), in
    this process; returns ``(summary row, arrays)`` and writes the arrays to the
    ``.npz`` file ``out`` if given. The result is the one a sweep of this run gives."""
    import tempfile

    table = dict(config)
    for key, value in table.items():
        if _is_grid(key, value):
            raise SpecError(f"spec key {key!r}: a single run takes one value, got the list {value!r}")
    spec = spec_from_dict({"sweep": table})
    r = spec.runs[0]
    every = max(1, math.ceil(r["steps"] / chunks))
    bar = _bar(r["steps"], progress, "fastbias run")
    try:
        with tempfile.TemporaryDirectory(prefix="fastbias-run-") as tmp:
            os.makedirs(os.path.join(tmp, "runs"))
            os.makedirs(os.path.join(tmp, "data"))
            for sha, path in spec.data_files.items():
                with open(path, "rb") as f:
                    store.atomic_write(os.path.join(tmp, "data", sha + ".npz"), f.read())
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1):
                execute([r], tmp, every=every, seconds=math.inf, report=bar.update if bar is not None else None)
            arrays = read_run(tmp, r["id"])
    finally:
        if bar is not None:
            bar.close()
    row = arrays["summary"]
    if out is not None:
        save = dict(arrays)
        save["summary"] = np.str_(json.dumps(row, sort_keys=True, allow_nan=True))
        store.save_npz(out, save)
    return row, arrays


# --------------------------------------------------------------------------- figures


def plot_sweep(out, *, progress=True):
    """The standard figures of a finished sweep in ``out``: ``fig_convergence.png``
    (measures against t per architecture and depth) and ``fig_final.png`` (final
    measures against depth). Returns their paths."""
    from fastbias import plot

    path = os.path.join(out, "summary.parquet")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: plot a finished sweep (fastbias sweep SPEC --out {out})")
    s = store.read_parquet(path)
    measures = ("one_minus_cos_predicted", "one_minus_cos_l2", "normalized_margin", "log_loss")
    points = {}
    ids = s["id"]
    it = ids
    if progress:
        from tqdm import tqdm

        it = tqdm(ids, desc="fastbias plot", unit="run", file=sys.stderr, dynamic_ncols=True)
    for i, rid in enumerate(it):
        h = store.load_npz(_final_path(out, rid))["history"]
        key = (s["arch"][i], s["depth"][i])
        cols = {"normalized_margin": h["normalized_margin"], "log_loss": h["log_loss"]}
        for ref in ("predicted", "l2"):
            if f"cos_{ref}" in h.dtype.names:
                cols[f"one_minus_cos_{ref}"] = 1.0 - h[f"cos_{ref}"]
        for name, values in cols.items():
            by_step = points.setdefault(key, {}).setdefault(name, {})
            for t, v in zip(h["step"].tolist(), values.tolist()):
                by_step.setdefault(t, []).append(v)
    series = {}
    for key, m in points.items():
        series[key] = {}
        for name in measures:
            if name not in m:
                continue
            steps = sorted(m[name])
            vals = [np.asarray(m[name][t], dtype=np.float64) for t in steps]
            stat = [(np.nanmedian(v), np.nanmin(v), np.nanmax(v)) if np.isfinite(v).any() else (np.nan,) * 3
                    for v in vals]
            series[key][name] = (np.array(steps, dtype=np.float64), *(np.array(c) for c in zip(*stat)))
    finals = {}
    ratio = [a / b if b and np.isfinite(b) else math.nan for a, b in zip(s["margin_p"], s["margin_p_predicted"])]
    for name, values in (("one_minus_cos_predicted", s["one_minus_cos_predicted"]),
                         ("kkt_residual", s["kkt_residual"]), ("margin_ratio", ratio), ("log_loss", s["log_loss"])):
        m = finals.setdefault(name, {})
        for arch, depth, v in zip(s["arch"], s["depth"], values):
            m.setdefault((arch, depth), []).append(math.nan if v is None else v)
    title = f"{os.path.basename(os.path.abspath(out))} ({len(ids)} runs)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN medians of measures a run lacks
        return [plot.sweep_convergence_figure(series, os.path.join(out, "fig_convergence.png"), title=title),
                plot.sweep_final_figure(finals, os.path.join(out, "fig_final.png"), title=title)]
