"""The theory layer: what the paper predicts gradient descent converges to.

After Gunasekar, Lee, Soudry, Srebro (2018), Sections 2-5:

* ``max_margin``: the convex max-margin problems, eq. (6) (``"l2"``), the
  diagonal-net ``"l1"`` problem and eq. (9) (``"fourier_l1"``), solved with cvxpy
  (Clarabel, SCS as fallback), with their dual variables.
* ``kkt_residual``: a certificate of the first-order stationarity conditions
  (11)-(13) of ``min ||T beta||_p s.t. y_n <x_n, beta> >= 1`` for any predictor,
  e.g. one from gradient descent.
* ``stationary_point``: a local method (iteratively reweighted l1) for the
  nonconvex problem (10), ``p = 2/L < 1``.
* ``predicted``: the theorem for an architecture and depth (Theorems 1, 2, 2a,
  Lemma 6).
* ``induced_penalty`` / ``balanced_factorization``: ``R_P(beta)`` of eq. (15) in
  closed form (Lemmas 5-7, with the constant verified under the kernels'
  conventions) and weights attaining it.

Conventions are the README's: ``beta = P_conv(w) = w_1 (*) ... (*) w_L``, the
paper's unitary DFT ``beta_hat = fft(beta) / sqrt(D)`` and
``beta_hat = D^{(L-1)/2} prod_l w_hat_l``. See the README section "Theory".

This module imports cvxpy; ``import fastbias`` does not import this module.
"""

import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np
import cvxpy as cp
from scipy.optimize import nnls
from threadpoolctl import threadpool_limits

from fastbias.data import check_dataset, is_separable
from fastbias.kernels._validate import as_float_array, check_choice, check_int

__all__ = [
    "max_margin", "kkt_residual", "stationary_point", "predicted",
    "induced_penalty", "balanced_factorization", "is_separable",
    "unitary_dft", "penalty_value",
    "MaxMarginSolution", "KKTCertificate", "StationaryPoint", "Prediction",
]

PENALTIES = ("l2", "l1", "fourier_l1")
DOMAINS = ("fourier", "primal")
ARCHS = ("linear", "fc", "diag", "conv")

SOLVERS = ("CLARABEL", "SCS")
"""Tried in this order; the first that reports ``optimal`` wins."""
SOLVER_OPTIONS = {"CLARABEL": {}, "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000}}

ACCURACY_TOL = 1e-5
"""Relative duality gap / dual infeasibility above which a solution draws a warning."""

MARGIN_TOLS = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
"""Relative margin slack ``m_n - 1`` (margins scaled to minimum 1) scanned for the active set."""
SUPPORT_TOLS = (1e-12, 1e-10, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1)
"""Coefficient thresholds, relative to ``max |T beta|``, scanned for the support."""


# --------------------------------------------------------------------------- validation


def _vector(v, name, D):
    v = as_float_array(v, name)
    if v.shape != (D,):
        raise ValueError(f"{name} must have shape ({D},) (one weight per feature), got {v.shape}")
    return np.asarray(v, dtype=np.float64)


def _exponent(p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a real number in (0, 2], got {type(p).__name__}")
    p = float(p)
    if not (math.isfinite(p) and 0.0 < p <= 2.0):
        raise ValueError(f"p must be in (0, 2] (the l_p exponent, 2/L for depth L), got {p}")
    return p


def _depth(depth):
    return check_int(depth, "depth", 1)


def _arch_depth(arch, depth):
    arch = check_choice(arch, "arch", ARCHS)
    depth = _depth(depth)
    if arch == "linear" and depth != 1:
        raise ValueError(f"arch='linear' has depth 1, got depth={depth} (use arch='fc' for deep networks)")
    return arch, depth


def _separable_data(X, y):
    X, y = check_dataset(X, y)
    if not is_separable(X, y):
        raise ValueError("the data (X, y) are not linearly separable: no beta has y_n <x_n, beta> >= 1 "
                         "for all n, so the max-margin problem is infeasible")
    return X, y


# --------------------------------------------------------------------------- transforms


def unitary_dft(v):
    """The paper's unitary DFT along the last axis: ``fft(v) / sqrt(D)``."""
    v = np.asarray(v)
    return np.fft.fft(v, axis=-1) / math.sqrt(v.shape[-1])


class _Layout:
    """A real orthonormal basis ``Q`` (D, D) of R^D grouped into bins, with
    ``beta = Q c``: for ``"primal"`` the unit vectors (one bin each); for ``"fourier"``
    the constant (bin k = 0), ``sqrt(2/D) cos`` and ``sqrt(2/D) sin`` of frequency k
    (one bin of two coordinates for each conjugate pair k, D - k) and, for even D, the
    alternating vector (the Nyquist bin k = D/2). Then ``|beta_hat[k]| = ||c_bin|| / rho``
    with ``rho = sqrt 2`` for the pairs and 1 otherwise, and ``sum_d |beta_hat[d]|^p =
    sum_bins mult * (||c_bin|| / rho)^p`` with ``mult`` = 2 for the pairs, 1 otherwise
    (the conjugate pairs counted twice). Bins follow the half spectrum k = 0 .. D // 2."""

    def __init__(self, D, domain):
        self.D = D
        if domain == "primal":
            self.Q = np.eye(D)
            self.bins = [np.array([d]) for d in range(D)]
            self.mult = np.ones(D)
            self.rho = np.ones(D)
        else:
            p = np.arange(D)
            npair = (D - 1) // 2
            cols = [np.full(D, 1.0 / math.sqrt(D))]
            for k in range(1, npair + 1):
                cols += [math.sqrt(2.0 / D) * np.cos(2 * np.pi * k * p / D),
                         math.sqrt(2.0 / D) * np.sin(2 * np.pi * k * p / D)]
            if D % 2 == 0:
                cols.append((-1.0) ** p / math.sqrt(D))
            self.Q = np.array(cols).T
            self.bins = [np.array([0])] + [np.array([2 * k - 1, 2 * k]) for k in range(1, npair + 1)]
            if D % 2 == 0:
                self.bins.append(np.array([D - 1]))
            self.mult = np.array([1.0 if len(b) == 1 else 2.0 for b in self.bins])
            self.rho = np.array([1.0 if len(b) == 1 else math.sqrt(2.0) for b in self.bins])
        self.scale = self.mult / self.rho  # the penalty is sum_bins scale * ||c_bin||
        self.single = np.array([b[0] for b in self.bins if len(b) == 1], dtype=np.int64)
        self.pairs = np.array([b for b in self.bins if len(b) == 2], dtype=np.int64).reshape(-1, 2)
        self.is_pair = np.array([len(b) == 2 for b in self.bins])

    def moduli(self, c):
        """``|T beta|`` per bin (numpy), from the coordinates c = Q^T beta."""
        return np.array([np.linalg.norm(c[b]) for b in self.bins]) / self.rho

    def cvx_norms(self, c):
        """cvxpy expression of ``||c_bin||`` per bin, in bin order."""
        parts = []
        if self.pairs.size == 0:
            return cp.abs(c)
        # bins in order: singles first (k = 0), pairs, then (even D) the last single
        pair_norms = cp.norm(cp.vstack([c[self.pairs[:, 0]], c[self.pairs[:, 1]]]), 2, axis=0)
        parts.append(cp.abs(c[self.bins[0]]))
        parts.append(pair_norms)
        if len(self.bins) > 1 + len(self.pairs):
            parts.append(cp.abs(c[self.bins[-1]]))
        return cp.hstack(parts)


def _transform(v, domain):
    """``T v`` along the last axis: the unitary DFT (complex) or the identity."""
    return unitary_dft(v) if domain == "fourier" else np.asarray(v, dtype=np.float64)


def penalty_value(beta, penalty):
    """``||beta||_2``, ``||beta||_1`` or ``sum_d |beta_hat[d]|`` (all D coefficients)."""
    penalty = check_choice(penalty, "penalty", PENALTIES)
    beta = np.asarray(beta, dtype=np.float64)
    if penalty == "l2":
        return float(np.linalg.norm(beta))
    if penalty == "l1":
        return float(np.sum(np.abs(beta)))
    return float(np.sum(np.abs(unitary_dft(beta))))


def _dual_norm(s, penalty):
    """The dual norm of the penalty at ``s``: ``||s||_2``, ``||s||_inf``, ``max_d |s_hat[d]|``."""
    if penalty == "l2":
        return float(np.linalg.norm(s))
    if penalty == "l1":
        return float(np.max(np.abs(s)))
    return float(np.max(np.abs(unitary_dft(s))))


# --------------------------------------------------------------------------- solving


def _solve(problem, what):
    """Solve with the SOLVERS in order. Returns (solver, status). Raises RuntimeError
    naming every solver's status when none is optimal or optimal_inaccurate; warns
    (naming the statuses) when the best is optimal_inaccurate, preferring the earlier
    solver's inaccurate solution."""
    tried = []
    inaccurate = last = None
    for name in SOLVERS:
        try:
            with warnings.catch_warnings():  # cvxpy's own note; ours below names the status
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                problem.solve(solver=name, **SOLVER_OPTIONS.get(name, {}))
        except (cp.error.SolverError, ArithmeticError, ValueError) as exc:
            tried.append(f"{name}: solver error ({exc})")
            continue
        last = name
        status = problem.status
        if status == cp.OPTIMAL:
            return name, status
        tried.append(f"{name}: status {status!r}")
        if status == cp.OPTIMAL_INACCURATE and inaccurate is None:
            inaccurate = name
    if inaccurate is not None:
        if inaccurate != last:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                problem.solve(solver=inaccurate, **SOLVER_OPTIONS.get(inaccurate, {}))
        warnings.warn(f"{what}: no solver reached status 'optimal' ({'; '.join(tried)}); using the "
                      f"{inaccurate} solution with status {problem.status!r}", RuntimeWarning, stacklevel=3)
        return inaccurate, problem.status
    raise RuntimeError(f"{what}: no solver succeeded ({'; '.join(tried)})")


@dataclass(repr=False)
class MaxMarginSolution:
    """Solution of a max-margin problem ``min penalty(beta) s.t. y_n <x_n, beta> >= 1``.

    Attributes
    ----------
    beta : (D,) float64, scaled to minimum margin exactly 1
    value : penalty(beta) (= 1 / normalized margin under that penalty)
    alpha : (N,) float64 >= 0, the duals of the margin constraints of the problem with
        the *norm* as objective: ``sum_n alpha_n y_n x_n`` is a subgradient of the penalty
        at beta, and ``sum(alpha) == value`` (strong duality). For ``"l2"`` the classic SVM
        duals (objective ``||beta||^2 / 2``) are ``value * alpha``.
    support_vectors : int indices n with ``alpha_n > 1e-6 max(alpha)``
    status, solver : the cvxpy status and the solver that produced it
    penalty : the penalty; margins : (N,) ``y_n <x_n, beta>``
    gap : relative duality gap |value - sum(alpha)| / value; dual_infeasibility :
        ``dual_norm(sum alpha_n y_n x_n) - 1`` (both ~ 0 when accurate)
    kkt_error : max violation of the KKT conditions (stationarity on the support,
        dual feasibility, complementary slackness), in the penalty's own units
    polished : whether the support/active-set polish replaced the solver's (beta, alpha)
    """

    beta: np.ndarray
    value: float
    alpha: np.ndarray
    support_vectors: np.ndarray
    status: str
    solver: str
    penalty: str
    margins: np.ndarray
    gap: float
    dual_infeasibility: float
    kkt_error: float
    polished: bool

    def __repr__(self):
        return (f"MaxMarginSolution(penalty={self.penalty!r}, value={self.value:.6g}, "
                f"support_vectors={self.support_vectors.tolist()}, status={self.status!r}, "
                f"solver={self.solver!r}, gap={self.gap:.2g}, kkt_error={self.kkt_error:.2g})")


def _l1_kkt_error(A, lay, c, alpha, support):
    """KKT violation of ``min sum_bins scale ||c_bin|| s.t. A Q c >= 1`` at (c, alpha),
    c at minimum margin 1: stationarity on the support bins, dual feasibility off them,
    complementary slackness, dual sign (all relative to the penalty's unit subgradient)."""
    r = lay.Q.T @ (A.T @ alpha)
    err = 0.0
    for k, bidx in enumerate(lay.bins):
        nb = np.linalg.norm(c[bidx])
        if k in support:
            err = max(err, float(np.max(np.abs(r[bidx] - lay.scale[k] * c[bidx] / nb))) / lay.scale[k])
        else:
            err = max(err, float(np.linalg.norm(r[bidx])) / lay.scale[k] - 1.0)
    m = A @ (lay.Q @ c)
    err = max(err, float(np.max(alpha * (m - 1.0))) / max(float(alpha.max()), 1e-300), float(-alpha.min()))
    return err


def _l2_kkt_error(A, beta, alpha):
    """KKT violation of ``min ||beta|| s.t. A beta >= 1`` at (beta, alpha), beta at min margin 1."""
    m = A @ beta
    return max(float(np.max(np.abs(A.T @ alpha - beta / np.linalg.norm(beta)))),
               float(np.max(alpha * (m - 1.0))) / max(float(alpha.max()), 1e-300), float(-alpha.min()))


def _polish_l2(A, beta):
    """The SVM on its active set exactly: ``beta = A_act^T a``, ``A_act beta = 1`` (the Gram
    system), for a few active-set slacks; kept when a >= 0, beta moves by < 1e-3 relative
    and the KKT error drops. Returns (kkt_error, beta, alpha) or None."""
    m = A @ beta
    best = None
    for tm in (1e-9, 1e-7, 1e-5, 1e-3):
        act = np.flatnonzero(m - 1.0 <= tm)
        Aa = A[act]
        a = np.linalg.lstsq(Aa @ Aa.T, np.ones(len(act)), rcond=None)[0]
        b2 = Aa.T @ a
        if not np.all(np.isfinite(b2)) or np.min(a) < 0 or np.linalg.norm(b2 - beta) > 1e-3 * np.linalg.norm(beta):
            continue
        b2 = b2 / np.min(A @ b2)
        a2 = np.zeros(A.shape[0])
        a2[act] = a / np.linalg.norm(b2)  # the duals of the norm form
        err = _l2_kkt_error(A, b2, a2)
        if best is None or err < best[0]:
            best = (err, b2, a2)
    return best


def _polish_l1(A, lay, c, alpha):
    """Sharpen an interior-point solution of the (Fourier) l1 problem.

    On the optimal face the objective is smooth: with the support bins S and the active
    constraints read off the solution, (beta, alpha) solve
    ``grad f(c_S) = M^T alpha, M c_S = 1`` (``f = sum_S scale ||c_bin||``, ``M`` the active
    rows in the support coordinates), which Newton's method solves to rounding from the
    solver's point. This matters: f is only quadratically curved along the face, so a
    1e-9 objective accuracy leaves beta and alpha off by about 1e-5. A few support
    thresholds and active-set slacks are tried; a candidate counts only if it moves c by
    less than 1e-3 relative, keeps alpha >= 0 and the signs/phases of the support, and
    lowers the KKT error. Returns (kkt_error, c, alpha) of the best candidate, or None."""
    mods = lay.moduli(c)
    m = A @ (lay.Q @ c)
    best = None
    tried = set()
    for ts in (1e-9, 1e-7, 1e-5, 1e-3):
        support = sorted(np.flatnonzero(mods > ts * mods.max()).tolist())
        cols = np.concatenate([lay.bins[k] for k in support])
        # position of each support bin's coordinates within cols
        pos, start = [], 0
        for k in support:
            pos.append(np.arange(start, start + len(lay.bins[k])))
            start += len(lay.bins[k])
        for tm in (1e-9, 1e-7, 1e-5, 1e-3):
            act = np.flatnonzero(m - 1.0 <= tm)
            key = (tuple(support), tuple(act))
            if key in tried:
                continue
            tried.add(key)
            M = A[act] @ lay.Q[:, cols]
            x = c[cols].copy()

            def grad_hess(x):
                g = np.zeros_like(x)
                H = np.zeros((len(x), len(x)))
                for k, ix in zip(support, pos):
                    v = x[ix]
                    nv = np.linalg.norm(v)
                    g[ix] = lay.scale[k] * v / nv
                    if len(ix) == 2:
                        H[np.ix_(ix, ix)] = lay.scale[k] * (np.eye(2) / nv - np.outer(v, v) / nv ** 3)
                return g, H

            g, H = grad_hess(x)
            a = np.linalg.lstsq(M.T, g, rcond=None)[0]
            n_act = len(act)
            for _ in range(30):
                g, H = grad_hess(x)
                r = np.concatenate([g - M.T @ a, M @ x - 1.0])
                if np.max(np.abs(r)) < 1e-15 * max(1.0, float(np.max(np.abs(g)))):
                    break
                KKT = np.block([[H, -M.T], [M, np.zeros((n_act, n_act))]])
                step = np.linalg.lstsq(KKT, -r, rcond=None)[0]
                x = x + step[: len(x)]
                a = a + step[len(x):]
            if not np.all(np.isfinite(x)) or np.linalg.norm(x - c[cols]) > 1e-3 * np.linalg.norm(c):
                continue
            if any(np.linalg.norm(x[ix]) < 0.5 * np.linalg.norm(c[lay.bins[k]]) for k, ix in zip(support, pos)):
                continue  # a support coefficient collapsed or changed sign
            if np.min(a, initial=0.0) < -1e-9 * max(float(np.max(np.abs(a), initial=0.0)), 1e-300):
                continue
            c2 = np.zeros_like(c)
            c2[cols] = x
            m2 = A @ (lay.Q @ c2)
            c2 /= m2.min()
            a2 = np.zeros(A.shape[0])
            a2[act] = np.maximum(a, 0.0)
            err = _l1_kkt_error(A, lay, c2, a2, set(support))
            if best is None or err < best[0]:
                best = (err, c2, a2)
    return best


def max_margin(X, y, penalty):
    """The max-margin predictor for ``penalty``.

    ``"l2"``: eq. (6)/(8), the hard-margin SVM (fc nets of any depth, Theorem 1).
    ``"l1"``: ``min ||beta||_1`` (depth-2 diagonal nets, Lemma 6).
    ``"fourier_l1"``: eq. (9), ``min sum_d |beta_hat[d]|`` over all D unitary DFT
    coefficients of the real beta (depth-2 conv nets, Theorem 2): beta is written in the
    real orthonormal cos/sin basis, one second-order cone (the modulus of a complex
    coefficient as the norm of a 2-vector) per conjugate pair, counted twice, the real
    bins d = 0 and d = D/2 once. The margin constraints stay real, so their duals exist.

    The l1 problems are then polished (support and active set read off, beta moved onto
    the active margins, alpha refitted by NNLS) when that lowers the KKT error: the
    interior-point duals of these cones are accurate only to about 1e-5.

    Parameters
    ----------
    X : (N, D) float array; y : (N,) labels +-1 (must be linearly separable)
    penalty : {"l2", "l1", "fourier_l1"}

    Returns
    -------
    MaxMarginSolution

    Raises
    ------
    ValueError for bad input or non-separable data; RuntimeError when no solver
    returns a solution. Warns (RuntimeWarning) when the solution is inaccurate
    (status optimal_inaccurate, duality gap or dual infeasibility above ACCURACY_TOL).
    """
    penalty = check_choice(penalty, "penalty", PENALTIES)
    X, y = _separable_data(X, y)
    N, D = X.shape
    A = y[:, None] * X
    lay = _Layout(D, "fourier" if penalty == "fourier_l1" else "primal")
    c = cp.Variable(D)
    if penalty == "l2":
        # the SVM form ||beta||^2 / 2: a QP, whose duals come out far more accurate than the
        # cone form's; its duals alpha' relate to the norm form's by alpha = alpha' / ||beta||
        objective = 0.5 * cp.sum_squares(c)
    else:
        objective = lay.scale @ lay.cvx_norms(c)
    constraint = (A @ lay.Q) @ c >= 1
    problem = cp.Problem(cp.Minimize(objective), [constraint])
    solver, status = _solve(problem, f"max_margin(penalty={penalty!r})")
    raw = None if c.value is None else np.asarray(c.value, dtype=np.float64)
    alpha = None if constraint.dual_value is None else np.asarray(constraint.dual_value, dtype=np.float64).reshape(N)
    if raw is None or alpha is None or not (np.all(np.isfinite(raw)) and np.all(np.isfinite(alpha))):
        raise RuntimeError(f"max_margin(penalty={penalty!r}): solver {solver} returned status {status!r} "
                           "without a finite primal/dual solution")
    if penalty == "l2":
        alpha = alpha / max(float(np.linalg.norm(raw)), np.finfo(float).tiny)
    m_raw = A @ (lay.Q @ raw)
    gamma = float(np.min(m_raw))
    if not gamma > 0:
        raise RuntimeError(f"max_margin(penalty={penalty!r}): solver {solver} (status {status!r}) returned a "
                           f"beta that does not separate the data (min margin {gamma:.3g})")
    neg = float(np.min(alpha))
    scale_a = float(np.max(np.abs(alpha))) or 1.0
    alpha = np.maximum(alpha, 0.0)
    cs = raw / gamma
    polished = False
    if penalty == "l2":
        kkt = _l2_kkt_error(A, cs, alpha)
        with threadpool_limits(limits=1, user_api="blas"):  # small solves: threads only cost
            best = _polish_l2(A, cs)
        if best is not None and best[0] < kkt:
            kkt, cs, alpha = best
            polished = True
    else:
        mods = lay.moduli(cs)
        kkt = _l1_kkt_error(A, lay, cs, alpha, set(np.flatnonzero(mods > 1e-7 * mods.max()).tolist()))
        # about a hundred small least-squares solves: a multithreaded BLAS on a busy
        # machine made them 20-50x slower (0.5 s -> 11-24 s at D = 256, measured)
        with threadpool_limits(limits=1, user_api="blas"):
            best = _polish_l1(A, lay, cs, alpha)
        if best is not None and best[0] < kkt:
            kkt, cs, alpha = best
            polished = True
    beta_v = lay.Q @ cs
    margins = A @ beta_v
    value = penalty_value(beta_v, penalty)
    gap = abs(value - float(alpha.sum())) / value
    dual_inf = _dual_norm(A.T @ alpha, penalty) - 1.0
    problems = []
    if 1.0 - gamma > ACCURACY_TOL:
        problems.append(f"margin constraint violated by {1.0 - gamma:.2g}")
    if gap > ACCURACY_TOL:
        problems.append(f"relative duality gap {gap:.2g}")
    if dual_inf > ACCURACY_TOL:
        problems.append(f"dual infeasibility {dual_inf:.2g}")
    if kkt > 10 * ACCURACY_TOL:
        problems.append(f"KKT error {kkt:.2g}")
    if neg < -ACCURACY_TOL * scale_a:
        problems.append(f"negative dual {neg:.2g}")
    if problems:
        warnings.warn(f"max_margin(penalty={penalty!r}): inaccurate solution from {solver} (status "
                      f"{status!r}): {', '.join(problems)}", RuntimeWarning, stacklevel=2)
    sv = np.flatnonzero(alpha > 1e-6 * alpha.max()) if alpha.max() > 0 else np.arange(0)
    return MaxMarginSolution(beta=beta_v, value=value, alpha=alpha, support_vectors=sv, status=status,
                             solver=solver, penalty=penalty, margins=margins, gap=gap,
                             dual_infeasibility=dual_inf, kkt_error=kkt, polished=polished)


# --------------------------------------------------------------------------- KKT certificate


@dataclass(repr=False)
class KKTCertificate:
    """Certificate of the first-order conditions (11)-(13) of
    ``min ||T beta||_p s.t. y_n <x_n, beta> >= 1`` at ``beta`` (scaled to min margin 1).

    Attributes
    ----------
    residual : float, relative and dimensionless: ``max`` of the ``parts``
        (0 for an exact stationary point)
    parts : dict with
        ``stationarity``: ``||(T s - u)_S|| / ||u_S||``, ``s = sum_n alpha_n y_n x_n``,
        ``u = p |z|^{p-2} z`` the gradient of ``sum_d |z_d|^p``, ``z = T beta``, on the support S;
        ``off_support`` (p = 1): ``max_{d not in S} (|(T s)_d| - 1)_+``;
        ``complementarity``: ``sum_n alpha_n (m_n - 1) / sum_n alpha_n`` (slack of the
        constraints used as active);
        ``dropped``: ``||z off S|| / ||z||`` (the coefficients treated as exactly 0)
    alpha : (N,) float64 >= 0 (zero off the active set)
    support_vectors : int indices with alpha_n > 0
    support : int indices d of the coefficients of ``T beta`` treated as nonzero
    tolerances : {"margin": relative slack for the active set, "support": relative threshold}
    beta : (D,) the predictor scaled to minimum margin 1; p, domain : as given
    """

    residual: float
    parts: dict
    alpha: np.ndarray
    support_vectors: np.ndarray
    support: np.ndarray
    tolerances: dict
    beta: np.ndarray
    p: float
    domain: str

    def __repr__(self):
        parts = ", ".join(f"{k}={v:.2g}" for k, v in self.parts.items())
        return (f"KKTCertificate(residual={self.residual:.3g}, p={self.p:.4g}, domain={self.domain!r}, "
                f"support_vectors={len(self.support_vectors)}, support={len(self.support)}, {parts}, "
                f"tolerances={self.tolerances})")


def _p_gradient(z, p, support):
    """``u = p |z|^{p-2} z`` on ``support`` (zeros elsewhere; 0 at z = 0 for p > 1)."""
    u = np.zeros_like(z)
    a = np.abs(z[support])
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(a > 0, p * a ** (p - 2.0), 0.0)
    u[support] = g * z[support]
    return u


def _stack(M):
    """Complex (rows, cols) -> real (2 rows, cols) by stacking real and imaginary parts."""
    if np.iscomplexobj(M):
        return np.concatenate([M.real, M.imag], axis=0)
    return M


def _score(Zt, z, p, support, act, m, alpha_act, target, off_check):
    """The parts of the certificate for alpha on the active set ``act``."""
    N = Zt.shape[0]
    alpha = np.zeros(N)
    alpha[act] = alpha_act
    s_hat = Zt.T @ alpha  # T s (D,)
    tn = np.linalg.norm(target)
    stat = float(np.linalg.norm(_stack((s_hat[support] - target[support])[:, None])) / tn) if tn > 0 else 0.0
    off = 0.0
    if off_check:
        mask = np.ones(len(z), bool)
        mask[support] = False
        if mask.any():
            off = float(max(0.0, np.max(np.abs(s_hat[mask])) - 1.0))
    sa = alpha.sum()
    comp = float(alpha @ (m - 1.0) / sa) if sa > 0 else 0.0
    zn = np.linalg.norm(z)
    mask = np.ones(len(z), bool)
    mask[support] = False
    dropped = float(np.linalg.norm(z[mask]) / zn) if zn > 0 else 0.0
    return alpha, {"stationarity": stat, "off_support": off, "complementarity": comp, "dropped": dropped}


def _refine_l1(Zt, z, support, act, m, target):
    """p = 1: the alpha >= 0 on ``act`` minimizing max(stationarity, off-support excess), a
    convex problem (NNLS fits only the support and may pick a vertex that violates
    |.| <= 1 off it when alpha is not unique)."""
    D = len(z)
    mask = np.ones(D, bool)
    mask[support] = False
    Ma = Zt[act].T  # (D, n_act) complex or real
    a = cp.Variable(len(act), nonneg=True)
    t = cp.Variable()
    tn = float(np.linalg.norm(target))
    Ms = _stack(Ma[support])
    ts = _stack(target[support][:, None])[:, 0]
    cons = [cp.norm(Ms @ a - ts, 2) <= t * tn]
    if mask.any():
        Mo = Ma[mask]
        if np.iscomplexobj(Mo):
            cons.append(cp.norm(cp.vstack([Mo.real @ a, Mo.imag @ a]), 2, axis=0) <= 1 + t)
        else:
            cons.append(cp.abs(Mo @ a) <= 1 + t)
    prob = cp.Problem(cp.Minimize(t), cons)
    try:
        prob.solve(solver="CLARABEL")
    except (cp.error.SolverError, ArithmeticError, ValueError):
        return None
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or a.value is None:
        return None
    return np.maximum(np.asarray(a.value, dtype=np.float64), 0.0)


def kkt_residual(X, y, beta, p, domain, *, margin_tols=MARGIN_TOLS, support_tols=SUPPORT_TOLS):
    """Certificate that ``beta`` is a first-order stationary point of
    ``min ||T beta||_p s.t. y_n <x_n, beta> >= 1`` (eqs. 10-13), ``T`` the unitary DFT
    (``domain="fourier"``) or the identity (``"primal"``), ``0 < p <= 2``.

    ``beta`` is scaled to minimum margin 1. For each active set ``{n : m_n - 1 <= tol_m}``
    and support ``{d : |z_d| > tol_s max|z|}`` (``z = T beta``; all d for p > 1, where the
    objective is differentiable), ``alpha >= 0`` is fitted by NNLS so that
    ``T sum_n alpha_n y_n x_n`` matches ``u = p |z|^{p-2} z`` on the support: the gradient of
    ``sum_d |z_d|^p``, which in the time domain is ``Re(F^H u)`` (u is Hermitian symmetric
    for real beta, so the conjugate pairs are handled by working with all D coefficients).
    For p = 1 the dual must also satisfy ``|T s| <= 1`` off the support (eq. 12; NNLS then a
    convex refinement of the three best candidates). For p < 1 the Clarke subdifferential
    is unconstrained off the support (eq. 13). Every (tol_m, tol_s) in the scan is scored
    by ``max(stationarity, off_support, complementarity, dropped)`` (see ``KKTCertificate``),
    so larger tolerances must pay for what they ignore; the best is returned.

    The objective's scale is irrelevant (alpha absorbs it), so eq. (13)'s ``p |z|^{p-1}``
    (the subgradient of ``||.||_p^p``) and the quasi-norm's give the same certificate.

    Parameters
    ----------
    X : (N, D); y : (N,) +-1; beta : (D,), must separate the data
    p : float in (0, 2]; domain : {"fourier", "primal"}
    margin_tols, support_tols : the scanned tolerances (relative)

    Returns
    -------
    KKTCertificate
    """
    X, y = check_dataset(X, y)
    N, D = X.shape
    beta = _vector(beta, "beta", D)
    p = _exponent(p)
    domain = check_choice(domain, "domain", DOMAINS)
    margin_tols = _tols(margin_tols, "margin_tols")
    support_tols = _tols(support_tols, "support_tols")
    A = y[:, None] * X
    m = A @ beta
    gamma = float(np.min(m))
    if not gamma > 0:
        raise ValueError(f"beta does not separate the data (min margin y_n <x_n, beta> = {gamma:.3g} <= 0): "
                         "the KKT conditions are stated for feasible predictors")
    beta = beta / gamma
    m = m / gamma
    z = _transform(beta, domain)
    Zt = _transform(A, domain)  # rows T(y_n x_n)
    mag = np.abs(z)
    if domain == "fourier":  # the same threshold decision for both members of a conjugate pair
        mag = 0.5 * (mag + mag[(-np.arange(D)) % D])
    zmax = float(mag.max())
    if p > 1:
        supports = [(0.0, np.arange(D))]
    else:
        supports = []
        seen = set()
        for ts in support_tols:
            S = np.flatnonzero(mag > ts * zmax)
            key = S.tobytes()
            if key not in seen:
                seen.add(key)
                supports.append((ts, S))
    candidates = []
    seen_act = {}
    for tm in margin_tols:
        act = np.flatnonzero(m - 1.0 <= tm)
        key = act.tobytes()
        if key in seen_act:
            continue
        seen_act[key] = tm
        for ts, S in supports:
            u = _p_gradient(z, p, S)
            M = _stack(Zt[act][:, S].T)
            t = _stack(u[S][:, None])[:, 0]
            a_act, _ = nnls(M, t, maxiter=50 * max(M.shape))
            alpha, parts = _score(Zt, z, p, S, act, m, a_act, u, off_check=(p == 1.0))
            candidates.append((max(parts.values()), tm, ts, act, S, alpha, parts, u))
    candidates.sort(key=lambda c: c[0])
    if p == 1.0:
        refined = []
        for c in candidates[:3]:
            _, tm, ts, act, S, alpha, parts, u = c
            if parts["off_support"] > 0 or parts["stationarity"] > 1e-12:
                a_act = _refine_l1(Zt, z, S, act, m, u)
                if a_act is not None:
                    alpha2, parts2 = _score(Zt, z, p, S, act, m, a_act, u, off_check=True)
                    if max(parts2.values()) < c[0]:
                        c = (max(parts2.values()), tm, ts, act, S, alpha2, parts2, u)
            refined.append(c)
        candidates = sorted(refined, key=lambda c: c[0]) + candidates[3:]
    res, tm, ts, act, S, alpha, parts, _ = min(candidates, key=lambda c: c[0])
    if p != 1.0:
        parts.pop("off_support")
    return KKTCertificate(residual=float(res), parts=parts, alpha=alpha,
                          support_vectors=np.flatnonzero(alpha > 0), support=S,
                          tolerances={"margin": tm, "support": ts}, beta=beta, p=p, domain=domain)


def _tols(tols, name):
    arr = np.asarray(tols, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be a non-empty sequence of finite tolerances >= 0, got {tols!r}")
    return tuple(sorted(float(t) for t in arr))


# --------------------------------------------------------------------------- stationary points


@dataclass(repr=False)
class StationaryPoint:
    """A (local) solution of ``min ||T beta||_p s.t. y_n <x_n, beta> >= 1``.

    Attributes
    ----------
    beta : (D,) scaled to minimum margin 1
    value : ``||T beta||_p = (sum_d |(T beta)_d|^p)^{1/p}`` over all D coefficients
    certificate : KKTCertificate of beta
    iterations : reweighting iterations used (0 for the convex cases, p >= 1)
    history : objective ``sum_d (|z_d| + eps)^p`` per iteration (non-increasing at fixed eps)
    p, domain : as given
    """

    beta: np.ndarray
    value: float
    certificate: KKTCertificate
    iterations: int
    history: list = field(default_factory=list)
    p: float = 1.0
    domain: str = "fourier"

    def __repr__(self):
        return (f"StationaryPoint(p={self.p:.4g}, domain={self.domain!r}, value={self.value:.6g}, "
                f"iterations={self.iterations}, residual={self.certificate.residual:.3g})")


def _lp_value(beta, p, domain):
    return float(np.sum(np.abs(_transform(beta, domain)) ** p) ** (1.0 / p))


def stationary_point(X, y, p, domain, start=None, *, eps_start=1e-2, eps_stop=1e-9, max_iter=300, rtol=1e-6):
    """A first-order stationary point of ``min ||T beta||_p s.t. y_n <x_n, beta> >= 1``
    (eq. 10 for the Fourier domain, p = 2/L), found locally from ``start``.

    For p < 1 (nonconvex): iteratively reweighted l1, each step the convex problem
    ``min sum_d w_d |(T beta)_d| s.t. margins >= 1`` (cvxpy, one compiled problem with the
    weights as a parameter) with ``w_d = (|(T beta_k)_d| + eps)^{p-1}`` (one weight per
    conjugate pair), a majorize-minimize step for ``sum_d (|z_d| + eps)^p``; ``eps`` starts
    at ``eps_start * max|T beta|`` and drops tenfold whenever the iterate settles
    (relative change < rtol), down to ``eps_stop * max|T beta|``, where it stops once settled
    (or after ``max_iter`` convex solves). At a fixed point the
    KKT conditions hold up to ``O(eps / |z_d|)`` on the support.
    For p >= 1 the problem is convex and solved directly (``start`` is ignored).

    Parameters
    ----------
    X : (N, D); y : (N,) +-1 (separable); p : float in (0, 2]
    domain : {"fourier", "primal"}
    start : (D,) float array, e.g. a gradient-descent predictor (default: the p = 1 solution)

    Returns
    -------
    StationaryPoint
    """
    X, y = _separable_data(X, y)
    N, D = X.shape
    p = _exponent(p)
    domain = check_choice(domain, "domain", DOMAINS)
    if start is not None:
        start = _vector(start, "start", D)
        if not np.any(start):
            raise ValueError("start is all zeros: give a nonzero starting predictor")
    for name, v in (("eps_start", eps_start), ("eps_stop", eps_stop), ("rtol", rtol)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    max_iter = check_int(max_iter, "max_iter", 1)
    A = y[:, None] * X
    if p == 1.0 or p == 2.0:
        sol = max_margin(X, y, "l2" if p == 2.0 else ("fourier_l1" if domain == "fourier" else "l1"))
        return StationaryPoint(beta=sol.beta, value=_lp_value(sol.beta, p, domain),
                               certificate=kkt_residual(X, y, sol.beta, p, domain), iterations=0,
                               p=p, domain=domain)
    lay = _Layout(D, domain)
    c = cp.Variable(D)
    norms = lay.cvx_norms(c)  # ||c_bin||, |z_bin| = ||c_bin|| / rho
    constraint = (A @ lay.Q) @ c >= 1
    if p > 1:
        problem = cp.Problem(cp.Minimize((lay.mult / lay.rho ** p) @ cp.power(norms, p)), [constraint])
        _solve(problem, f"stationary_point(p={p})")
        beta = lay.Q @ np.asarray(c.value, dtype=np.float64)
        beta = beta / np.min(A @ beta)
        return StationaryPoint(beta=beta, value=_lp_value(beta, p, domain),
                               certificate=kkt_residual(X, y, beta, p, domain), iterations=0,
                               p=p, domain=domain)
    if start is None:
        start = max_margin(X, y, "fourier_l1" if domain == "fourier" else "l1").beta
    weights = cp.Parameter(len(lay.bins), nonneg=True)
    problem = cp.Problem(cp.Minimize(weights @ norms), [constraint])
    beta = start.copy()
    mod = lay.moduli(lay.Q.T @ beta)
    eps = eps_start * mod.max()
    history = []
    it = 0
    while it < max_iter:
        # sum_d w_d |z_d| = sum_bins mult w |z_bin| = sum_bins scale w ||c_bin||
        w = lay.scale * (mod + eps) ** (p - 1.0)
        # smallest weight 1: the support's terms keep the objective O(1), so the
        # solver's absolute tolerances stay relative ones
        weights.value = w / w.min()
        _solve(problem, f"stationary_point(p={p}) reweighted step {it}")
        it += 1
        new = lay.Q @ np.asarray(c.value, dtype=np.float64)
        new = new / np.min(A @ new)
        change = np.linalg.norm(new - beta) / np.linalg.norm(new)
        beta = new
        mod = lay.moduli(lay.Q.T @ beta)
        history.append(float(lay.mult @ (mod + eps) ** p))
        if change < rtol:  # settled at this eps
            eps_min = eps_stop * mod.max()
            if eps <= eps_min * (1 + 1e-12):
                break
            eps = max(eps / 10.0, eps_min)
    return StationaryPoint(beta=beta, value=_lp_value(beta, p, domain),
                           certificate=kkt_residual(X, y, beta, p, domain), iterations=it,
                           history=history, p=p, domain=domain)


# --------------------------------------------------------------------------- the theorems


@dataclass(repr=False)
class Prediction:
    """What the paper predicts for GD on (arch, depth): the limit direction.

    Attributes
    ----------
    beta : (D,) the predicted direction, scaled to minimum margin 1
    problem : str, the optimization problem and the result it comes from
    p : the exponent 2/L of the l_p penalty; domain : "fourier" or "primal"
    certificate : KKTCertificate of beta for that problem
    solution : the MaxMarginSolution or StationaryPoint behind beta
    """

    beta: np.ndarray
    problem: str
    p: float
    domain: str
    certificate: KKTCertificate
    solution: object

    def __repr__(self):
        return f"Prediction({self.problem!r}, residual={self.certificate.residual:.3g})"


def predicted(X, y, arch, depth, start=None):
    """The limit direction of GD predicted by the paper for ``arch`` and ``depth``.

    * ``"linear"``, ``"fc"`` (any depth): the l2 max margin, eq. (8) (Theorem 1).
    * ``"conv"``, L = 2: the Fourier-l1 max margin, eq. (9) (Theorem 2); L = 1 is linear (l2);
      L > 2: a first-order stationary point of eq. (10), ``||beta_hat||_{2/L}``
      (Theorem 2a), found by ``stationary_point`` from ``start`` (default: the L = 2 solution).
    * ``"diag"``: ``min ||beta||_{2/L}`` (Lemma 6 with eq. 15): l2 for L = 1, l1 for L = 2, a
      stationary point from ``start`` for L > 2 (default: the l1 solution).

    Returns
    -------
    Prediction
    """
    arch, depth = _arch_depth(arch, depth)
    X, y = _separable_data(X, y)
    if start is not None:
        start = _vector(start, "start", X.shape[1])
    p = 2.0 / depth
    if arch in ("linear", "fc") or depth == 1:
        sol = max_margin(X, y, "l2")
        what = ("Theorem 1: min ||beta||_2 s.t. y_n <x_n, beta> >= 1 (eq. 8), for every depth"
                if arch in ("linear", "fc") else f"depth 1 {arch} = linear predictor: min ||beta||_2 (eq. 6)")
        return Prediction(sol.beta, what, 2.0, "primal", kkt_residual(X, y, sol.beta, 2.0, "primal"), sol)
    domain = "fourier" if arch == "conv" else "primal"
    if depth == 2:
        pen = "fourier_l1" if arch == "conv" else "l1"
        sol = max_margin(X, y, pen)
        what = ("Theorem 2: min ||beta_hat||_1 s.t. y_n <x_n, beta> >= 1 (eq. 9)" if arch == "conv"
                else "Lemma 6 (L=2) with eq. 15: min ||beta||_1 s.t. y_n <x_n, beta> >= 1")
        return Prediction(sol.beta, what, 1.0, domain, kkt_residual(X, y, sol.beta, 1.0, domain), sol)
    sp = stationary_point(X, y, p, domain, start)
    what = (f"Theorem 2a: a first-order stationary point of min ||beta_hat||_{{2/{depth}}} s.t. "
            f"y_n <x_n, beta> >= 1 (eq. 10)" if arch == "conv" else
            f"Lemma 6 with eq. 15: a first-order stationary point of min ||beta||_{{2/{depth}}} "
            f"s.t. y_n <x_n, beta> >= 1")
    return Prediction(sp.beta, what, p, domain, sp.certificate, sp)


# --------------------------------------------------------------------------- induced penalties


def induced_penalty(beta, arch, depth):
    """``R_P(beta) = min_{w : P(w) = beta} ||w||^2`` (eq. 15) in closed form.

    * linear: ``||beta||_2^2``
    * fc, any widths (Lemma 5): ``L ||beta||_2^{2/L}``
    * diag (Lemma 6): ``L ||beta||_{2/L}^{2/L} = L sum_d |beta_d|^{2/L}``
    * conv (Lemma 7 with the constant of ``beta_hat = D^{(L-1)/2} prod_l w_hat_l``):
      ``L D^{-(L-1)/L} sum_d |beta_hat[d]|^{2/L}`` (= ``(L/D) sum_d |fft(beta)[d]|^{2/L}``);
      the lemma as printed omits ``D^{-(L-1)/L}``, which is right only for L = 1 or D = 1.

    Verified in tests/test_theory.py against local minimizations of ``||w||^2`` subject
    to ``P(w) = beta`` evaluated with ``fastbias.kernels``.
    """
    arch, depth = _arch_depth(arch, depth)
    beta = as_float_array(beta, "beta")
    if beta.ndim != 1:
        raise ValueError(f"beta must be 1-D (D,), got shape {beta.shape}")
    beta = beta.astype(np.float64)
    L = depth
    if arch == "linear":
        return float(beta @ beta)
    if arch == "fc":
        return float(L * np.linalg.norm(beta) ** (2.0 / L))
    if arch == "diag":
        return float(L * np.sum(np.abs(beta) ** (2.0 / L)))
    D = beta.shape[0]
    return float(L / D * np.sum(np.abs(np.fft.fft(beta)) ** (2.0 / L)))


def balanced_factorization(beta, arch, depth, widths=None, *, check=True):
    """Weights ``w*`` with ``P(w*) = beta`` and ``||w*||^2 = R_P(beta)`` (balanced layers).

    * linear: ``beta`` itself (D,).
    * fc: rank one, ``W_1 = |beta|^{1/L} (beta/|beta|) u_1^T``, ``W_l = |beta|^{1/L} u_{l-1} u_l^T``,
      ``W_L = |beta|^{1/L} u_{L-1}`` with unit ``u_l = 1/sqrt(D_l)`` (widths default D each):
      a list of L matrices (D_{l-1}, D_l).
    * diag: ``w_l = |beta|^{1/L}``, the signs of beta on the first layer: (L, D).
    * conv: ``w_hat_l[d] = |b_d|^{1/L} exp(i phi_d / L)`` with ``b = beta_hat D^{-(L-1)/2}``, the
      phases Hermitian symmetric (``phi_{D-d} = -phi_d``) so each ``w_l`` is real, and at
      d = 0 (and the Nyquist bin) the sign of the real ``b_d`` on the first layer: (L, D).

    With ``check`` (default) ``P(w*)`` is recomputed through ``fastbias.kernels``
    (``pconv``/``pdiag``/``pfull``) and a mismatch raises RuntimeError.
    """
    arch, depth = _arch_depth(arch, depth)
    beta = as_float_array(beta, "beta")
    if beta.ndim != 1:
        raise ValueError(f"beta must be 1-D (D,), got shape {beta.shape}")
    beta = beta.astype(np.float64)
    D = beta.shape[0]
    L = depth
    if widths is not None and arch != "fc":
        raise ValueError(f"widths applies to arch='fc' only, got arch={arch!r}")
    if arch == "linear":
        return beta.copy()
    if arch == "fc":
        if widths is None:
            widths = [D] * (L - 1)
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
            raise TypeError("widths must be a sequence of the hidden widths D_1..D_{L-1}")
        widths = [check_int(w, "widths[i]", 1) for w in widths]
        if len(widths) != L - 1:
            raise ValueError(f"widths must list the {L - 1} hidden widths of a depth-{L} net, got {len(widths)}")
        nb = float(np.linalg.norm(beta))
        c = nb ** (1.0 / L)
        dims = [D] + widths + [1]
        us = [np.ones(k) / math.sqrt(k) for k in dims]
        direction = beta / nb if nb > 0 else np.zeros(D)
        Ws = [c * np.outer(direction if l == 0 else us[l], us[l + 1]) for l in range(L)]
        if check:
            from fastbias import kernels as K
            _check_factor(K.pfull(Ws), beta, arch)
        return Ws
    if arch == "diag":
        ws = np.tile(np.abs(beta) ** (1.0 / L), (L, 1))
        ws[0] *= np.where(beta < 0, -1.0, 1.0)
        if check:
            from fastbias import kernels as K
            _check_factor(K.pdiag(ws), beta, arch)
        return ws
    B = np.fft.rfft(beta)  # unnormalized half spectrum, = sqrt(D) beta_hat[:K]
    b = B * D ** (-L / 2.0)  # beta_hat D^{-(L-1)/2}
    mag = np.abs(b) ** (1.0 / L)
    phase = np.angle(b) / L
    real_bins = [0] + ([D // 2] if D % 2 == 0 else [])
    W = np.tile(mag * np.exp(1j * phase), (L, 1))
    for k in real_bins:  # b_k is real: signs, not phases, keep the w_l real
        W[:, k] = mag[k]
        if b[k].real < 0:
            W[0, k] = -mag[k]
    ws = np.fft.irfft(W * math.sqrt(D), D, axis=1)
    if check:
        from fastbias import kernels as K
        _check_factor(K.pconv(ws), beta, arch)
    return ws


def _check_factor(got, beta, arch):
    err = float(np.max(np.abs(got - beta)))
    if err > 1e-9 * max(1.0, float(np.max(np.abs(beta)))):
        raise RuntimeError(f"balanced_factorization({arch!r}): P(w*) differs from beta by {err:.3g}")
