"""Datasets: validation, the separability LP, generators."""

import numpy as np

from fastbias.kernels._validate import as_float_array


def check_dataset(X, y):
    """Validated float64 copies of ``X`` (N, D) and ``y`` (N,) with entries +-1."""
    X = as_float_array(X, "X", min_ndim=2)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (N samples, D features), got shape {X.shape}")
    if isinstance(y, (str, bytes)):
        raise TypeError(f"y must be an array of +1/-1 labels, got a {type(y).__name__}")
    y = np.asarray(y)
    if y.dtype.kind not in "iuf":
        raise TypeError(f"y must hold numbers +1/-1, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {y.shape[0]} labels but X has {X.shape[0]} samples")
    if not np.all((y == 1) | (y == -1)):
        bad = y[~((y == 1) | (y == -1))][0]
        raise ValueError(f"y must contain only +1 and -1, found {bad!r}")
    return np.ascontiguousarray(X, dtype=np.float64), y.astype(np.float64)


def is_separable(X, y):
    """Whether some beta has ``y_n <x_n, beta> >= 1`` for all n (strict linear
    separability through the origin), by an LP (scipy's HiGHS).

    Raises RuntimeError if the LP solver fails to decide."""
    from scipy.optimize import linprog

    X, y = check_dataset(X, y)
    N, D = X.shape
    A = -(y[:, None] * X)
    # scale rows so the LP is well conditioned; feasibility is scale invariant
    scale = np.linalg.norm(A, axis=1)
    if np.any(scale == 0):
        return False  # a zero sample has margin 0 for every beta
    res = linprog(np.zeros(D), A_ub=A / scale[:, None], b_ub=-1.0 / scale,
                  bounds=[(None, None)] * D, method="highs")
    if res.status == 0:
        return True
    if res.status == 2:
        return False
    raise RuntimeError(f"separability LP did not decide: {res.message} (status {res.status})")


def gaussian_dataset(n, d, seed, *, teacher=None):
    """X with N(0, 1) entries; labels ``sign(<x, teacher>)`` for a Gaussian teacher
    (drawn from ``seed`` unless given). Separable by construction."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if teacher is None:
        teacher = rng.standard_normal(d)
    s = X @ teacher
    y = np.where(s >= 0, 1.0, -1.0)
    return X, y
