"""A ``Run``'s state as plain arrays and back, and batched driving in chunks.

The one place outside ``fastbias.engine`` that knows a ``Run``'s internals (its flat
state ``theta``, the compiled loop's statistics, the recorded rows) and the engine's
driver ``_drive``. Everything a run needs to continue is its state: gradient descent
draws no random numbers after the initialization, which is a function of ``seed``
(rebuilt by ``fit_many(..., steps=0)``), so restoring ``state(run)`` into a fresh run
of the same configuration continues bit for bit.

Chunked driving records one row more at every chunk boundary than an uninterrupted
``fit`` would (the engine records the last step of each call); ``history`` keeps the
rows of the uninterrupted schedule only, so a run driven in any chunks, killed and
restored any number of times, has exactly the history of ``fit(steps=T)``
(tests/test_sweep.py holds it to that, bit for bit).
"""

import numpy as np

from fastbias import engine

STATE_KEYS = ("theta", "stats", "history", "steps_done", "halvings", "status")


def new_runs(X, y, seeds, **config):
    """Runs of one configuration on one dataset, one per seed, initialized and not
    stepped (``fit_many(..., steps=0)``: they share the prepared dataset)."""
    return engine.fit_many(X, y, seeds=list(seeds), steps=0, **config)


def advance(runs, steps, threads=1):
    """Advance ``runs`` by ``steps`` iterations in one batched engine call.

    The runs must share architecture, depth, widths, D, loss, step policy and record
    policy, be grouped by dataset, all be running and all have done the same number of
    steps. The engine's results do not depend on the grouping or the thread count."""
    if not runs:
        return
    t = runs[0].steps_done
    for r in runs:
        if r.status != "running" or r.steps_done != t:
            raise ValueError("advance: every run must be running and at the same step")
    engine._drive(runs, int(steps), threads)


def state(run):
    """The run's state as a dict of arrays (see ``STATE_KEYS``)."""
    return {
        "theta": np.array(run._theta, dtype=np.float64),
        "stats": np.array(run._stats, dtype=np.float64),
        "history": run.history,
        "steps_done": np.int64(run.steps_done),
        "halvings": np.int64(run.halvings),
        "status": np.str_(run.status),
    }


def restore(run, saved):
    """Put the state ``saved`` (from ``state``) into ``run``, a fresh run of the same
    configuration; ``ValueError`` if it does not fit."""
    missing = [k for k in STATE_KEYS if k not in saved]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}")
    theta = np.asarray(saved["theta"], dtype=np.float64)
    stats = np.asarray(saved["stats"], dtype=np.float64)
    if theta.shape != run._theta.shape or stats.shape != run._stats.shape:
        raise ValueError(f"checkpoint state has shapes {theta.shape}, {stats.shape}; the run needs "
                         f"{run._theta.shape}, {run._stats.shape}")
    hist = saved["history"]
    names = run.history.dtype.names
    if hist.dtype.names != names:
        raise ValueError(f"checkpoint history has columns {hist.dtype.names}, the run records {names}")
    status = str(saved["status"])
    if status not in engine.STATUS.values():
        raise ValueError(f"checkpoint has unknown status {status!r}")
    run._theta = theta.copy()
    run._stats = stats.copy()
    run._rows = [tuple(row) for row in hist.tolist()]
    run.steps_done = int(saved["steps_done"])
    run.halvings = int(saved["halvings"])
    run.status = status
    return run


def schedule(record, steps):
    """The steps an uninterrupted ``fit(steps=steps, record=record)`` records (the
    initial point 0 included), as a sorted int64 array."""
    if record == "log":
        pts = engine._record_steps(0, steps)
    elif record == "last":
        pts = [steps] if steps > 0 else []
    else:
        every = int(record)
        pts = list(range(every, steps, every)) + ([steps] if steps > 0 else [])
    return np.unique(np.array([0] + list(pts), dtype=np.int64))


def history(run, steps):
    """The run's history restricted to the rows an uninterrupted ``fit(steps=steps)``
    records: the schedule's steps, and the step where the run stopped if it stopped."""
    h = run.history
    keep = np.isin(h["step"], schedule(run._record, steps))
    if run.status != "running" and len(h):
        keep[-1] = True
    return h[keep]
