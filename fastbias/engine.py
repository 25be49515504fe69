"""Gradient descent on linear networks: ``fit``, ``fit_many`` and ``Run``.

The iterations run in compiled code (``fastbias.kernels._gd``), many steps per
call, returning to Python only to record the history. See the README sections
"Engine" and "Certified step sizes" for the numerics and the step-size bound.
"""

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fastbias.data import check_dataset, is_separable
from fastbias.kernels import _bins, _gd, _lanes
from fastbias.kernels._validate import as_float_array, check_choice, check_int

ARCHS = ("linear", "fc", "diag", "conv")
LOSSES = {"exp": _gd.EXP_LOSS, "logistic": _gd.LOGISTIC_LOSS}
STEPS = ("adaptive", "fixed")
STATUS = {
    _gd.RUNNING: "running",
    _gd.NONFINITE: "nonfinite",
    _gd.STUCK: "stuck",
    _gd.STATIONARY: "stationary",
}
RECORDS_PER_DECADE = 20
GROUP = 8  # runs per lockstep group in fit_many (one pass over the data serves the group)
assert GROUP == _lanes.LANES
LANES_TAG = (0,) * _lanes.LANES  # gd_lanes' lane count is the length of its tag tuple
# large batches of diag/conv runs go in groups of twice as many lanes (two vectors per
# operation: the loop's addressing and control are shared by twice the work, about
# 10% less time per run at conv (16,32,4)); a run's bits are the same in either
WIDE_GROUP = 2 * GROUP
WIDE_TAG = (0,) * WIDE_GROUP
SINGLE_TAG = (0,)
LANES_MIN = 4  # a group of fewer diag/conv runs goes one run per one-lane loop (measured faster)

HISTORY_COLUMNS = (
    "step", "log_loss", "min_margin", "normalized_margin", "beta_norm",
    "weight_norm", "step_size", "log_step_size", "halvings",
)


def _positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


class Problem:
    """A dataset prepared for one architecture: the compiled loop's inputs and the
    maps between the flat state ``theta`` and the network's weights."""

    def __init__(self, X, y, arch, depth, widths=None):
        self.arch = arch
        self.depth = L = depth
        N, D = X.shape
        self.D = D
        self.X = X
        self.y = y
        yx = y[:, None] * X
        self.X2 = float(np.max(np.einsum("nd,nd->n", X, X)))
        if arch == "conv":
            self.family = _gd.PROD
            self.K = self.Ki = K = D // 2 + 1
            pw = np.full(K, 2.0 / D)
            pw[0] = 1.0 / D
            if D % 2 == 0:
                pw[-1] = 1.0 / D
            Xf = np.fft.rfft(X, axis=1)
            Zc = y[:, None] * pw * Xf
            self.Z = np.ascontiguousarray(np.concatenate([Zc.real, Zc.imag], axis=1))
            self.pw = pw
            self.Xh = float(np.max(np.abs(Xf)))
        elif arch == "diag":
            self.family = _gd.PROD
            self.K, self.Ki = D, 0
            self.Z = np.ascontiguousarray(yx)
            self.pw = np.ones(D)
            self.Xh = float(np.max(np.abs(X)))
        else:
            self.family = _gd.FULL
            self.K, self.Ki = 1, 0
            self.Z = np.ascontiguousarray(yx)
            self.pw = np.ones(1)
            self.Xh = math.sqrt(self.X2)
        if self.family == _gd.FULL:
            hidden = [D] * (L - 1) if widths is None else list(widths)
            self.widths = np.array([D] + hidden + [1], dtype=np.int64)
            sizes = self.widths[:-1] * self.widths[1:]
            self.offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        else:
            self.widths = np.array([1, 1], dtype=np.int64)
            self.offsets = np.zeros(2, dtype=np.int64)
        self.P = int(self.offsets[-1]) if self.family == _gd.FULL else L * (self.K + self.Ki)
        self._bins = None

    # -- state <-> weights
    def init_weights(self, init_scale, seed):
        rng = np.random.default_rng(seed)
        L, D = self.depth, self.D
        if self.family == _gd.PROD:
            return init_scale * rng.standard_normal((L, D))
        return [init_scale * rng.standard_normal((int(a), int(b)))
                for a, b in zip(self.widths[:-1], self.widths[1:])]

    def theta_from_weights(self, weights):
        if self.family == _gd.FULL:
            return np.concatenate([np.asarray(W, dtype=np.float64).ravel() for W in weights])
        w = np.asarray(weights, dtype=np.float64)
        if self.arch == "conv":
            Wf = np.fft.rfft(w, axis=1)
            return np.concatenate([Wf.real.ravel(), Wf.imag.ravel()])
        return w.ravel().copy()

    def weights_from_theta(self, theta):
        L, D = self.depth, self.D
        if self.family == _gd.FULL:
            Ws = [theta[self.offsets[l]:self.offsets[l + 1]].reshape(int(self.widths[l]), int(self.widths[l + 1])).copy()
                  for l in range(L)]
            return Ws[0][:, 0].copy() if self.arch == "linear" else Ws
        if self.arch == "conv":
            K = self.K
            Wf = theta[: L * K].reshape(L, K) + 1j * theta[L * K:].reshape(L, K)
            return np.fft.irfft(Wf, D, axis=1)
        return theta.reshape(L, D).copy()

    def beta_from_theta(self, theta):
        if self.family == _gd.PROD:
            b = self.beta_spectrum(theta)
            if self.arch == "conv":
                return np.fft.irfft(b[: self.K] + 1j * b[self.K:], self.D)
            return b
        from fastbias.kernels._full import chain_offsets, chain_row

        b = np.empty(self.Z.shape[1])
        roff = chain_offsets(self.widths)
        chain_row(theta, self.widths, self.offsets, roff, np.empty(roff[-1]), b)
        return b

    def __setstate__(self, state):
        # a copied or unpickled Problem (copy.deepcopy, pickle) gets new arrays with
        # NumPy's alignment; the slot loop wants its data on 64-byte boundaries (a
        # 512-bit load straddling two cache lines made conv (128,128,3) 38 % slower)
        self.__dict__.update(state)
        if self._bins is not None:
            tag, packed, *data = self._bins
            self._bins = (tag, packed, *(_bins.aligned(a) for a in data))

    def beta_spectrum(self, theta):
        """The predictor in the coordinates where ``pw`` gives its norm: conv, the
        half spectrum of beta as ``[Re (K), Im (K)]``; diag, beta itself."""
        b = np.empty(self.K + self.Ki)
        L, K = self.depth, self.K
        _gd.prod_beta(theta[: L * K].reshape(1, L, K), theta[L * K:].reshape(1, L, self.Ki), 0,
                      b.reshape(1, -1))
        return b

    def spectra(self, vectors):
        """Time-domain vectors (n, D) in the coordinates of ``beta_spectrum``."""
        v = np.asarray(vectors, dtype=np.float64).reshape(-1, self.D)
        if self.arch != "conv":
            return v
        f = np.fft.rfft(v, axis=1)
        return np.concatenate([f.real, f.imag], axis=1)

    def parseval(self):
        """Weights ``w`` with ``u . v = sum_j w_j U_j V_j`` for the coordinates ``U, V``
        of ``beta_spectrum`` / ``spectra`` (Parseval, real signals)."""
        return np.concatenate([self.pw, self.pw[: self.Ki]])

    def weight_norm(self, theta):
        if self.family == _gd.PROD:
            return math.sqrt(_gd.prod_sqnorm(theta, self.depth, self.K, self.Ki, self.pw))
        return float(np.linalg.norm(theta))

    def loop_args(self):
        return (self.family, self.depth, self.K, self.Ki, self.widths, self.offsets)

    @property
    def bins(self):
        """``(tag, packed, ZR, ZI, ZTR, ZTI, pwr, pwi, ipr, ipi, msk)``: the data in
        the slot layout of the single-run loop ``_bins.gd_bins`` (made on first use)."""
        if self._bins is None:
            packed = self.arch == "conv" and self.D % 2 == 0
            tag, *data = _bins.bins_data(self.Z, self.pw, self.K, self.Ki, packed, self.depth)
            self._bins = (tag, packed, *data)
        return self._bins

    def gd_bins(self, thetas, loss, adaptive, step, steps, stats):
        """``steps`` iterations of the loop ``_bins.gd_bins`` (diag/conv) on this
        problem for the runs ``thetas`` (R, P) with ``stats`` (R, N_STATS), updated in
        place (or one run: (P,) and (N_STATS,)); ``step`` a number or one per run."""
        tag, packed, *data = self.bins
        t2 = thetas if thetas.ndim == 2 else thetas[None]  # views: updated in place
        s2 = stats if stats.ndim == 2 else stats[None]
        stp = np.asarray(step, dtype=np.float64)
        if stp.ndim == 0:
            stp = np.full(t2.shape[0], float(stp))
        _bins.gd_bins(tag, t2, self.depth, self.K, self.Ki, packed, *data, self.X2, self.Xh, loss, adaptive,
                      stp, steps, s2)


def _record_steps(start, stop):
    """Log-spaced record points in (start, stop] (about 20 per decade), plus stop."""
    if stop <= start:
        return []
    k = np.arange(0, RECORDS_PER_DECADE * (math.log10(max(stop, 1)) + 1) + 1)
    pts = np.unique(np.round(10.0 ** (k / RECORDS_PER_DECADE)).astype(np.int64))
    pts = pts[(pts > start) & (pts < stop)]
    return [int(p) for p in pts] + [int(stop)]


class Run:
    """The result of ``fit``: final weights and predictor, the history, and
    ``resume(steps)`` to continue exactly where the run stopped."""

    def __init__(self, problem, theta, *, loss, step, step_size, references, record, seed, init_scale,
                 lanes=False):
        self._problem = problem
        # runs made by fit_many for diag/conv nets go through the runs-in-SIMD-lanes
        # loop (_lanes.gd_lanes) for their whole life, resume included, so that their
        # bits never depend on how they were batched
        self._lanes = bool(lanes) and problem.family == _gd.PROD
        self._theta = theta
        self._loss = loss
        self._step = step
        self._step_size = step_size
        self._references = references
        self._record = record
        self.seed = seed
        self.init_scale = init_scale
        self.steps_done = 0
        self.halvings = 0
        self.status = "running"
        self._rows = []
        self._stats = np.zeros(_gd.N_STATS)
        self._stats[_gd.ST_LOG_ETA] = np.nan
        self._ref_norms = None  # the references' norms (and, diag/conv, spectra): first record

    # -- public
    arch = property(lambda self: self._problem.arch)
    depth = property(lambda self: self._problem.depth)

    @property
    def beta(self):
        """The predictor P(w) of the current weights, float64 (D,)."""
        return self._problem.beta_from_theta(self._theta)

    @property
    def weights(self):
        """The current weights: (L, D) for diag/conv (time domain), a list of
        matrices for fc, the vector (D,) for linear."""
        return self._problem.weights_from_theta(self._theta)

    @property
    def log_loss(self):
        return float(self._stats[_gd.ST_LOG_LOSS])

    @property
    def history(self):
        """Structured array, one row per recorded step (see ``HISTORY_COLUMNS`` and
        one ``cos_<name>`` column per reference)."""
        names = list(HISTORY_COLUMNS) + [f"cos_{k}" for k in self._references]
        dtype = [(n, np.int64 if n in ("step", "halvings") else np.float64) for n in names]
        out = np.zeros(len(self._rows), dtype=dtype)
        for i, row in enumerate(self._rows):
            out[i] = row
        return out

    def resume(self, steps):
        """Run ``steps`` more iterations, continuing exactly where the run stopped."""
        steps = check_int(steps, "steps", 0)
        _drive([self], steps, threads=None)
        return self

    def __repr__(self):
        return (f"Run(arch={self.arch!r}, depth={self.depth}, steps_done={self.steps_done}, "
                f"log_loss={self.log_loss:.6g}, status={self.status!r})")

    # -- internal
    def _record_row(self):
        if self._problem.family == _gd.PROD:
            self._record_row_values()  # Python floats only: no NumPy warning to silence
            return
        with np.errstate(all="ignore"):  # a diverged run records inf/NaN (its status says so)
            self._record_row_values()

    def _record_row_values(self):
        p = self._problem
        self._prepare_measures()
        if p.family == _gd.PROD:
            # norms and inner products of beta from its spectrum (Parseval), no inverse
            # FFT, in one compiled call
            out = self._row_measures
            _gd.prod_row_measures(self._theta, p.depth, p.K, p.Ki, p.pw, self._pweights, self._ref_spectra, out)
            bn, wn, dots = _prod_norms(out)
        else:
            beta = self.beta
            bn = float(np.linalg.norm(beta))
            wn = p.weight_norm(self._theta)
            dots = [beta @ r for r in self._references.values()]
        st = self._stats
        self._append_row(self.steps_done, float(st[_gd.ST_LOG_LOSS]), float(st[_gd.ST_MIN_MARGIN]),
                         float(st[_gd.ST_LOG_ETA]), self.halvings, bn, wn, dots)

    def _prepare_measures(self):
        """The references' norms (and, diag/conv, their spectra), at the first record."""
        if self._ref_norms is not None:
            return
        p = self._problem
        refs = list(self._references.values())
        self._ref_norms = [float(np.linalg.norm(r)) for r in refs]
        if p.family == _gd.PROD:
            self._pweights = p.parseval()
            self._ref_spectra = np.ascontiguousarray(p.spectra(refs) if refs else np.zeros((0, p.K + p.Ki)))
            self._row_measures = np.empty(2 + len(refs))

    def _append_row(self, step, log_loss, mmin, log_eta, halvings, bn, wn, dots):
        """A history row from the run's numbers at ``step`` (``bn``, ``wn``: the norms
        of beta and of the weights; ``dots``: <beta, reference>)."""
        row = [
            step,
            log_loss,
            mmin,
            mmin / bn if bn > 0 else np.nan,
            bn,
            wn,
            math.inf if log_eta >= 709.0 else math.exp(log_eta),  # NaN before the first step
            log_eta,
            halvings,
        ]
        for d, rn in zip(dots, self._ref_norms):
            den = bn * rn
            row.append(float(d / den) if den > 0 else np.nan)
        self._rows.append(tuple(row))


def _drive(runs, steps, threads):
    """Advance runs (sharing one Problem layout) by ``steps``, recording as asked."""
    if steps == 0 or not runs:
        return
    start = runs[0].steps_done
    if any(r.steps_done != start or r._record != runs[0]._record for r in runs):
        raise ValueError("runs advanced together must have done the same number of steps and record alike")
    stop = start + steps
    if runs[0]._record == "log":
        points = _record_steps(start, stop)
    elif runs[0]._record == "last":
        points = [stop]
    else:
        every = runs[0]._record
        points = list(range((start // every + 1) * every, stop, every)) + [stop]
    r = runs[0]
    if len(runs) == 1 and not r._lanes and r._problem.family == _gd.PROD and r.status == "running":
        _drive_history(r, start, points)
        return
    if start == 0 and not runs[0]._rows:
        _advance(runs, 0, threads)  # evaluate the initial point
        for r in runs:
            r._record_row()
    t = start
    for pt in points:
        _advance(runs, pt - t, threads)
        t = pt
        for r in runs:
            if r.steps_done == pt or r.status != "running" and (not r._rows or r._rows[-1][0] != r.steps_done):
                r._record_row()


def _prod_norms(measures):
    """``(||beta||, ||w||, [<beta, ref>...])`` from ``_gd.prod_row_measures``' output."""
    return math.sqrt(max(float(measures[0]), 0.0)), math.sqrt(float(measures[1])), measures[2:].tolist()


def _drive_history(r, start, points):
    """One running diag/conv run of ``fit``: the loop taken to every record point
    in one compiled call (``_bins.gd_bins_history``), which leaves each row's
    numbers; the same bits as a call per row, without the Python, the work arrays
    and the starting pass of each (about 10 µs a row)."""
    p = r._problem
    r._prepare_measures()
    rel = ([0] if start == 0 and not r._rows else []) + [pt - start for pt in points]
    pts = np.array(rel, dtype=np.int64)
    rows = np.empty((len(rel), _bins.ROW_MEASURES + 2 + len(r._ref_norms)))
    theta = r._theta.copy()
    stats = r._stats.copy()
    stats[_gd.ST_HALVINGS] = 0.0
    stats[_gd.ST_STEPS] = r.steps_done  # (the direction of the loop's passes)
    tag, packed, *data = p.bins
    n = _bins.gd_bins_history(tag, theta, p.depth, p.K, p.Ki, packed, *data, p.X2, p.Xh, LOSSES[r._loss],
                              r._step == "adaptive", float(r._step_size), pts, stats, p.pw, r._pweights,
                              r._ref_spectra, rows)
    h0 = r.halvings
    for row in rows[:n]:
        step = start + int(row[_bins.ROW_STEPS])
        if row[_bins.ROW_STATUS] != _gd.RUNNING and r._rows and r._rows[-1][0] == step:
            continue  # stopped where the last row was recorded
        r._append_row(step, float(row[_bins.ROW_LOG_LOSS]), float(row[_bins.ROW_MIN_MARGIN]),
                      float(row[_bins.ROW_LOG_ETA]), h0 + int(row[_bins.ROW_HALVINGS]),
                      *_prod_norms(row[_bins.ROW_MEASURES:]))
    _absorb([r], theta[None], stats[None])


_EXECUTORS = {}
_CPU_COUNT = os.cpu_count() or 1


def _executor(workers):
    ex = _EXECUTORS.get(workers)
    if ex is None:
        ex = _EXECUTORS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastbias")
    return ex


def _advance(runs, n, threads):
    p = runs[0]._problem
    R = len(runs)
    thetas = np.empty((R, runs[0]._theta.shape[0]))
    stats = np.empty((R, _gd.N_STATS))
    for i, r in enumerate(runs):
        thetas[i] = r._theta
        stats[i] = r._stats
        stats[i, _gd.ST_STEPS] = r.steps_done  # (gd_bins: the direction of its passes)
    stats[:, _gd.ST_HALVINGS] = 0.0
    for i, r in enumerate(runs):
        # finished runs (stuck, stationary, diverged) are left alone by the kernel
        stats[i, _gd.ST_STATUS] = _gd.RUNNING if r.status == "running" else _gd.STUCK
    step = np.array([r._step_size for r in runs])
    loss = LOSSES[runs[0]._loss]
    adaptive = runs[0]._step == "adaptive"
    lanes = runs[0]._lanes
    if any(r._lanes != lanes for r in runs):
        raise ValueError("runs of fit and of fit_many cannot advance together")
    if lanes:
        # SIMD-lane groups of GROUP runs in order, across datasets of one shape (a
        # run's bits depend neither on its group nor on its lane)
        probs = [r._problem for r in runs]
        # wide groups only when every worker gets at least one (else fewer, busier threads)
        width = WIDE_GROUP if R >= WIDE_GROUP * (threads if threads is not None else _CPU_COUNT) else GROUP
        group_start = np.array(list(range(0, R, width)) + [R], dtype=np.int64)
        X2s = np.array([q.X2 for q in probs])
        Xhs = np.array([q.Xh for q in probs])

        def lanes_call(a, b, tag):
            if all(q is probs[a] for q in probs[a:b]):
                _lanes.gd_lanes(tag, thetas[a:b], p.depth, p.K, p.Ki, probs[a].Z, p.pw, X2s[a:b], Xhs[a:b],
                                loss, adaptive, step[a:b], n, stats[a:b])
            else:
                Zs = np.stack([q.Z for q in probs[a:b]])
                _lanes.gd_lanes_each(tag, thetas[a:b], p.depth, p.K, p.Ki, Zs, p.pw, X2s[a:b], Xhs[a:b],
                                     loss, adaptive, step[a:b], n, stats[a:b])

        def run_group(g):
            a, b = group_start[g], group_start[g + 1]
            if b - a > GROUP:
                lanes_call(a, b, WIDE_TAG)
            elif b - a >= LANES_MIN:
                lanes_call(a, b, LANES_TAG)
            else:  # a few runs: one lane each costs less than idle lanes (same bits)
                for i in range(a, b):
                    lanes_call(i, i + 1, SINGLE_TAG)

        ngroups = len(group_start) - 1
    elif p.family == _gd.PROD:
        # diag/conv runs of fit: one run per call of the bins-in-SIMD-lanes loop
        def run_group(g):
            runs[g]._problem.gd_bins(thetas[g], loss, adaptive, step[g], n, stats[g])

        ngroups = R
    else:
        # fc and linear: lockstep groups of at most GROUP runs on one dataset (fixed
        # sizes: results do not depend on the thread count); runs arrive grouped by dataset
        datasets = []
        for r in runs:
            if not datasets or datasets[-1] is not r._problem:
                datasets.append(r._problem)
        starts, data = [0], []
        i = 0
        for j, q in enumerate(datasets):
            size = 0
            while i < R and runs[i]._problem is q:
                i += 1
                size += 1
                if size == GROUP or i == R or runs[i]._problem is not q:
                    starts.append(i)
                    data.append(j)
                    size = 0
        group_start = np.array(starts, dtype=np.int64)
        group_data = np.array(data, dtype=np.int64)
        args = p.loop_args()
        Zs = datasets[0].Z[None] if len(datasets) == 1 else np.stack([q.Z for q in datasets])
        X2s = np.array([q.X2 for q in datasets])
        Xhs = np.array([q.Xh for q in datasets])

        def run_group(g):
            a, b = group_start[g], group_start[g + 1]
            d = group_data[g]
            _gd.gd_group(thetas[a:b], *args, Zs[d], p.pw, X2s[d], Xhs[d], loss, adaptive, step[a:b], n,
                         stats[a:b])

        ngroups = len(group_data)
    workers = min(ngroups, threads if threads is not None else _CPU_COUNT)
    if workers <= 1:
        for g in range(ngroups):
            run_group(g)
    else:
        # the compiled loop releases the GIL; every group runs the same machine code
        # whichever thread takes it, so the bits do not depend on the thread count
        list(_executor(workers).map(run_group, range(ngroups)))
    _absorb(runs, thetas, stats)


def _absorb(runs, thetas, stats):
    """The runs take their new state from the loop's ``thetas`` and ``stats``."""
    for i, r in enumerate(runs):
        if r.status != "running":
            continue
        r._theta = thetas[i]
        r.steps_done += int(stats[i, _gd.ST_STEPS])
        r.halvings += int(stats[i, _gd.ST_HALVINGS])
        st = STATUS[int(stats[i, _gd.ST_STATUS])]
        keep_eta = r._stats[_gd.ST_LOG_ETA]
        r._stats = stats[i].copy()
        if int(stats[i, _gd.ST_STEPS]) == 0:
            r._stats[_gd.ST_LOG_ETA] = keep_eta
        r.status = st
        if st == "nonfinite":
            warnings.warn(f"run (seed {r.seed}) diverged: the loss became non-finite after "
                          f"{r.steps_done} steps (step size too large?)", RuntimeWarning, stacklevel=5)


def _prepare(X, y, *, arch, depth, widths, loss, steps, step, step_size, init_scale, allow_nonseparable, record):
    X, y = check_dataset(X, y)
    check_choice(arch, "arch", ARCHS)
    check_choice(loss, "loss", tuple(LOSSES))
    check_choice(step, "step", STEPS)
    if depth is None:
        depth = 1 if arch == "linear" else 2
    depth = check_int(depth, "depth", 1)
    if arch == "linear" and depth != 1:
        raise ValueError(f"arch='linear' has depth 1, got depth={depth} (use arch='fc' for deep networks)")
    steps = check_int(steps, "steps", 0)
    if widths is not None:
        if arch != "fc":
            raise ValueError(f"widths applies to arch='fc' only, got arch={arch!r}")
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
            raise TypeError("widths must be a sequence of the hidden layer widths D_1..D_{L-1}")
        widths = [check_int(w, "widths[i]", 1) for w in widths]
        if len(widths) != depth - 1:
            raise ValueError(f"widths must list the {depth - 1} hidden widths of a depth-{depth} net, got {len(widths)}")
    if step == "fixed":
        if step_size is None:
            raise ValueError("step='fixed' needs step_size (the learning rate eta of eq. 7)")
        step_size = _positive_float(step_size, "step_size")
    else:
        step_size = 1.0 if step_size is None else _positive_float(step_size, "step_size")
        if step_size >= 2.0:
            raise ValueError(f"step='adaptive' certifies eta = c / (L S) only for c < 2, got step_size={step_size}")
    if isinstance(record, str):
        check_choice(record, "record", ("log", "last"))
    else:
        record = check_int(record, "record", 1)
    # the separability LP (HiGHS; up to 0.2 s at D = 1024) is skipped when the caller
    # allows non-separable data: then neither its error nor its warning applies
    if not allow_nonseparable and not is_separable(X, y):
        if loss == "exp":
            raise ValueError("the data are not linearly separable: the exponential loss has no "
                             "minimizer direction (pass allow_nonseparable=True to run anyway)")
        if loss == "logistic":
            warnings.warn("the data are not linearly separable: logistic GD converges to a "
                          "finite minimizer, not a max-margin direction", RuntimeWarning, stacklevel=3)
    init_scale = (1.0 / math.sqrt(X.shape[1])) if init_scale is None else _positive_float(init_scale, "init_scale")
    return X, y, depth, widths, steps, step_size, init_scale, record


def _references(references, D):
    if references is None:
        return {}
    if isinstance(references, dict):
        items = references.items()
    else:
        items = ((str(i), r) for i, r in enumerate(references))
    out = {}
    for name, ref in items:
        ref = as_float_array(ref, f"references[{name!r}]")
        if ref.shape != (D,):
            raise ValueError(f"references[{name!r}] must have shape ({D},), got {ref.shape}")
        out[str(name)] = ref.astype(np.float64)
    return out


def fit(X, y, *, arch, depth=None, widths=None, loss="exp", steps, step="adaptive", step_size=None,
        init_scale=None, seed=0, record="log", references=None, init=None, allow_nonseparable=False):
    """Gradient descent (eq. 7) on a linear network of architecture ``arch``.

    Parameters
    ----------
    X : (N, D) float array; y : (N,) labels +-1
    arch : {"linear", "fc", "diag", "conv"}
    depth : int, number of layers L (1 for linear; default 2 otherwise)
    widths : hidden widths D_1..D_{L-1} of an fc net (default D each)
    loss : {"exp", "logistic"}
    steps : int, iterations to run
    step : {"adaptive", "fixed"}; ``step_size`` is eta for "fixed" and the factor
        c in eta = c / (L(w) S(w)) for "adaptive" (default 1, must be < 2)
    init_scale : standard deviation of every weight entry at initialization
        (default 1/sqrt(D)); ``seed`` seeds it. ``init`` gives the weights instead.
    record : "log" (about 20 rows per decade plus the last step), "last", or k (every k steps)
    references : dict name -> (D,) direction (or a sequence); a ``cos_<name>`` column each
    allow_nonseparable : run the exponential loss on data that are not linearly
        separable; also skips the separability check (an LP) altogether, so logistic
        runs on non-separable data then get no warning either

    Returns
    -------
    Run
    """
    X, y, depth, widths, steps, step_size, init_scale, record = _prepare(
        X, y, arch=arch, depth=depth, widths=widths, loss=loss, steps=steps, step=step,
        step_size=step_size, init_scale=init_scale, allow_nonseparable=allow_nonseparable, record=record)
    problem = Problem(X, y, arch, depth, widths)
    refs = _references(references, X.shape[1])
    theta = problem.theta_from_weights(_check_init(init, problem) if init is not None
                                       else problem.init_weights(init_scale, seed))
    run = Run(problem, theta, loss=loss, step=step, step_size=step_size, references=refs,
              record=record, seed=seed, init_scale=init_scale)
    _drive([run], steps, threads=None)
    return run


def _check_init(init, problem):
    L, D = problem.depth, problem.D
    if problem.family == _gd.PROD:
        w = as_float_array(init, "init", min_ndim=2)
        if w.shape != (L, D):
            raise ValueError(f"init must have shape (L, D) = {(L, D)}, got {w.shape}")
        return w
    if problem.arch == "linear":
        w = as_float_array(init, "init")
        if w.shape != (D,):
            raise ValueError(f"init must have shape ({D},), got {w.shape}")
        return [w[:, None]]
    if isinstance(init, np.ndarray) or not hasattr(init, "__len__") or len(init) != L:
        raise ValueError(f"init must be a list of {L} matrices for a depth-{L} fc net")
    mats = [as_float_array(W, f"init[{l}]", min_ndim=2) for l, W in enumerate(init)]
    for l, W in enumerate(mats):
        want = (int(problem.widths[l]), int(problem.widths[l + 1]))
        if W.shape != want:
            raise ValueError(f"init[{l}] must have shape {want}, got {W.shape}")
    return mats


def fit_many(X, y, *, arch, seeds=(0,), depth=None, widths=None, loss="exp", steps, step="adaptive",
             step_size=None, init_scale=None, record="log", references=None, threads=None,
             allow_nonseparable=False):
    """Many runs at once, in parallel over cores: every (dataset, seed) pair.

    ``X`` is (N, D) or a stack (S, N, D) of datasets with ``y`` (N,) or (S, N);
    runs that share a dataset share its prepared data and go in lockstep groups of
    ``GROUP`` (one pass over the data per round serves a group). For diagonal and
    convolutional nets a group runs one run per SIMD lane (``kernels._lanes``):
    every operation of the loop acts on eight runs at once (sixteen, in groups of
    ``WIDE_GROUP``, when there are at least that many runs per thread). ``threads`` is the
    number of worker threads over the groups (default: all cores).

    Each run's bits depend only on its own data, seed and settings: not on the
    thread count, nor on which other runs share its group (a run and its
    ``resume`` stay on the same loop). Diagonal and convolutional runs from
    ``fit_many`` agree with ``fit`` to rounding (about 1e-15 relative; the lane loop
    sums in another order); fc and linear runs equal ``fit`` bitwise. Returns a
    list of ``Run`` in the order ``[(s, seed) for s in datasets for seed in seeds]``.
    """
    Xa = np.asarray(X) if not isinstance(X, (str, bytes)) else X
    if isinstance(Xa, np.ndarray) and Xa.ndim == 3:
        ya = np.asarray(y)
        if ya.ndim != 2 or ya.shape[0] != Xa.shape[0]:
            raise ValueError(f"for a stack of {Xa.shape[0]} datasets y must have shape ({Xa.shape[0]}, N), got {ya.shape}")
        pairs = list(zip(Xa, ya))
    else:
        pairs = [(X, y)]
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    for s in seeds:
        check_int(s, "seed", 0)
    if threads is not None:
        threads = check_int(threads, "threads", 1)
    runs = []
    refs = None
    for Xs, ys in pairs:
        Xs, ys, d, w, steps_, c, scale, rec = _prepare(
            Xs, ys, arch=arch, depth=depth, widths=widths, loss=loss, steps=steps, step=step,
            step_size=step_size, init_scale=init_scale, allow_nonseparable=allow_nonseparable, record=record)
        problem = Problem(Xs, ys, arch, d, w)
        if refs is None:
            refs = _references(references, Xs.shape[1])
        for seed in seeds:
            theta = problem.theta_from_weights(problem.init_weights(scale, seed))
            runs.append(Run(problem, theta, loss=loss, step=step, step_size=c, references=refs,
                            record=rec, seed=seed, init_scale=scale, lanes=True))
    shapes = {r._problem.Z.shape for r in runs}
    if len(shapes) != 1:
        raise ValueError(f"all datasets in fit_many must have the same shape, got {sorted(shapes)}")
    _drive(runs, steps_, threads)
    return runs
