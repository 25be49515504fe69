"""Stated tolerances, shared by the test modules.

Every comparison is ``|got - ref| <= rtol * |ref| + atol`` elementwise (the rule
of ``numpy.testing.assert_allclose``, with a per-network ``atol``), with ``atol`` scaled per
network (per batch element) by one of two magnitudes:

* ``max|ref|`` of that network (``peak``), for float64 on fixed-seed standard
  normal inputs, where there is no catastrophic cancellation;
* the *term magnitude* ``M``: the same map evaluated on the
  absolute values of its inputs, e.g. ``max(|w_1| (*) ... (*) |w_L|)`` for the
  conv predictor, computed with the naive references. ``M >= max|ref|``; it is the
  standard scale of the rounding error of a sum of products (error ~ eps * sum
  |terms|), used for float32 and for hypothesis-drawn inputs.

The values:

* float64: ``RTOL64 = 1e-12`` and ``atol = 1e-12 * max|ref|`` (observed worst
  case over D <= 64, L <= 5, all backends: 4e-15 of max|ref|; D = 4096: 1e-15).
  Hypothesis tests use ``atol = 1e-12 * M``.
* float32 (computed in float32, compared with the float64 reference evaluated on
  the same float32 inputs): ``rtol = atol / M = tol32(L, D) = 4 * eps32 * L * sqrt(D)``,
  a random-walk bound for L levels of D-term sums of rounded products (observed
  worst case: 2e-7 of M, 0.16 of the bound).
* JVP/VJP against the dense central-difference Jacobian of the naive network:
  every predictor map here is affine in each single coordinate (each layer
  appears once), so central differences have *no* truncation error; only
  rounding is left, ~ eps64 * |P| / h with step ``FD_STEP = 1e-2``:
  ``TOL_FD = 1e-9`` relative to the term magnitude.
* adjoint identity ``<jvp(dw), g> = <dw, vjp(g)>``: ``TOL_ADJOINT = 1e-12`` relative
  to ``sum |jvp * g| + sum |dw * vjp|``.
"""

import numpy as np

RTOL64 = 1e-12
TOL64 = 1e-12
EPS32 = float(np.finfo(np.float32).eps)
FD_STEP = 1e-2
TOL_FD = 1e-9
TOL_ADJOINT = 1e-12


def tol32(L, D):
    """float32 tolerance relative to the term magnitude, for depth L and length D."""
    return 4.0 * EPS32 * L * np.sqrt(D)


def peak(ref, core=1):
    """max|ref| over the last ``core`` axes, kept for broadcasting (one scale per network)."""
    ref = np.abs(np.asarray(ref, dtype=np.float64))
    axes = tuple(range(ref.ndim - core, ref.ndim))
    return np.max(ref, axis=axes, keepdims=True)


def assert_close64(got, ref, core=1, scale=None, err_msg=""):
    """float64 rule: rtol 1e-12 and atol 1e-12 * (scale or max|ref| per network)."""
    got = np.asarray(got)
    assert got.dtype == np.float64, got.dtype
    assert got.shape == np.shape(ref), (got.shape, np.shape(ref))
    s = peak(ref, core) if scale is None else scale
    assert_scaled(got, ref, RTOL64, TOL64 * s, err_msg)


def assert_close32(got, ref, M, L, D, err_msg=""):
    """float32 rule: dtype float32, rtol = tol32(L, D) and atol = tol32(L, D) * M."""
    got = np.asarray(got)
    assert got.dtype == np.float32, got.dtype
    assert got.shape == np.shape(ref), (got.shape, np.shape(ref))
    t = tol32(L, D)
    assert_scaled(got.astype(np.float64), ref, t, t * M, err_msg)


def assert_scaled(got, ref, rtol, atol, err_msg):
    """``|got - ref| <= rtol |ref| + atol`` elementwise, ``atol`` broadcast against ref."""
    ref = np.asarray(ref, dtype=np.float64)
    atol = np.broadcast_to(np.asarray(atol, dtype=np.float64), ref.shape)
    err = np.abs(np.asarray(got, dtype=np.float64) - ref)
    bound = rtol * np.abs(ref) + atol
    bad = ~(err <= bound)
    if np.any(bad):
        i = np.unravel_index(np.argmax(np.where(bad, err - bound, -np.inf)), ref.shape)
        raise AssertionError(
            f"{err_msg}\n{int(bad.sum())} of {ref.size} elements out of tolerance; worst at {i}: "
            f"got {got[i]!r}, expected {ref[i]!r}, |err| = {err[i]:.3e} > bound {bound[i]:.3e}\n"
            f"max |err| / bound = {np.max(err / np.where(bound > 0, bound, np.inf)):.3e}"
        )


def adjoint_scale(jvp, g, dws, vjp):
    return float(np.sum(np.abs(jvp * g)) + np.sum(np.abs(dws * vjp)))
