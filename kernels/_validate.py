"""Input checks for the public wrappers: jitted code never sees unchecked input.

Every failure raises ``TypeError`` (wrong kind of object or dtype) or
``ValueError`` (wrong shape, size or values) with a message that names the
argument and the problem.
"""

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(x, name, *, min_ndim=1):
    """``x`` as a real float32/float64 ndarray with ``ndim >= min_ndim``, non-empty, finite."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array of real floats, got a {type(x).__name__}")
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested sequences
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype not in FLOAT_DTYPES:
        kind = {"c": "complex", "i": "integer", "u": "unsigned integer", "b": "boolean",
                "O": "object", "U": "string", "S": "bytes"}.get(arr.dtype.kind, "non-float")
        raise TypeError(
            f"{name} must have a real floating dtype (float32 or float64), got {kind} dtype {arr.dtype}"
        )
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    check_finite(arr, name)
    return arr


def check_finite(arr, name):
    # One reduction is enough when it is finite; otherwise look element-wise
    # (the sum of finite values can overflow).
    with np.errstate(over="ignore", invalid="ignore"):
        total = arr.sum()
    if not np.isfinite(total) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")


def check_backend(backend, allowed):
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, one of {allowed}, got {type(backend).__name__}")
    if backend not in allowed:
        raise ValueError(f"backend must be one of {allowed}, got {backend!r}")
    return backend


def broadcast_batch(name_a, a, core_a, name_b, b, core_b):
    """Broadcast the leading (batch) axes of ``a`` and ``b``, whose trailing
    ``core_a``/``core_b`` axes are the per-network shapes. Returns the batch shape."""
    try:
        return np.broadcast_shapes(a.shape[: a.ndim - core_a], b.shape[: b.ndim - core_b])
    except ValueError:
        raise ValueError(
            f"batch axes of {name_a} {a.shape[: a.ndim - core_a]} and {name_b} "
            f"{b.shape[: b.ndim - core_b]} do not broadcast"
        ) from None


def as_batched(arr, batch, core_shape, dtype):
    """``arr`` broadcast to ``batch + core_shape``, reshaped to ``(B,) + core_shape``,
    C-contiguous with ``dtype``."""
    full = np.broadcast_to(arr, tuple(batch) + tuple(core_shape))
    B = int(np.prod(batch, dtype=np.int64))
    return np.ascontiguousarray(full.reshape((B,) + tuple(core_shape)), dtype=dtype)


def check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
