"""Frequency-domain path on pyFFTW: real-input transforms, planned once.

Plans (``pyfftw.FFTW`` objects with their own aligned input/output arrays) are
cached per thread and keyed by (direction, rows, D, dtype). FFTW's planner is
not thread safe, so planning runs under one process-wide lock; executing a plan
is thread safe, and each thread executes only its own plans, so concurrent calls
from several threads never share buffers. Plans are made with FFTW_MEASURE under
a short planning time limit; FFTW's wisdom is process-wide, so a second thread
planning the same problem is quick.

The spectral products are the shared kernels of ``_products``.
"""

import threading
from collections import OrderedDict

import numpy as np
import pyfftw

from ._products import prod_layers, prod_layers_jvp, prod_layers_vjp

PLANNING_TIMELIMIT = 0.25  # seconds per plan
MAX_PLANS_PER_THREAD = 64

_PLAN_LOCK = threading.Lock()
_local = threading.local()

_COMPLEX = {np.dtype(np.float32): np.dtype(np.complex64), np.dtype(np.float64): np.dtype(np.complex128)}


def _plan(direction, rows, D, dtype):
    cache = getattr(_local, "plans", None)
    if cache is None:
        cache = _local.plans = OrderedDict()
    key = (direction, rows, D, dtype.char)
    plan = cache.get(key)
    if plan is not None:
        cache.move_to_end(key)
        return plan
    cdtype = _COMPLEX[dtype]
    K = D // 2 + 1
    if direction == "r2c":
        a = pyfftw.empty_aligned((rows, D), dtype=dtype)
        b = pyfftw.empty_aligned((rows, K), dtype=cdtype)
        fftw_dir = "FFTW_FORWARD"
    else:
        a = pyfftw.empty_aligned((rows, K), dtype=cdtype)
        b = pyfftw.empty_aligned((rows, D), dtype=dtype)
        fftw_dir = "FFTW_BACKWARD"
    with _PLAN_LOCK:
        plan = pyfftw.FFTW(
            a, b, axes=(-1,), direction=fftw_dir,
            flags=("FFTW_MEASURE", "FFTW_DESTROY_INPUT"),
            threads=1, planning_timelimit=PLANNING_TIMELIMIT,
        )
    cache[key] = plan
    if len(cache) > MAX_PLANS_PER_THREAD:
        cache.popitem(last=False)
    return plan


def clear_plans():
    """Drop this thread's cached FFTW plans."""
    _local.plans = OrderedDict()


def rfft_rows(x):
    """Unnormalized half spectrum of each row of a (rows, D) real array."""
    plan = _plan("r2c", x.shape[0], x.shape[1], x.dtype)
    plan.input_array[...] = x
    plan.execute()
    return plan.output_array.copy()


def irfft_rows(X, D, dtype):
    """Inverse of ``rfft_rows`` (with the 1/D), rows of length D."""
    plan = _plan("c2r", X.shape[0], D, dtype)
    plan.input_array[...] = X
    plan.execute()
    return plan.output_array * dtype.type(1.0 / D)


def _rfft_layers(ws):
    B, L, D = ws.shape
    return rfft_rows(ws.reshape(B * L, D)).reshape(B, L, D // 2 + 1)


def xcorr_fftw(h, w):
    D = h.shape[-1]
    H = rfft_rows(h)
    H *= np.conj(rfft_rows(w))
    return irfft_rows(H, D, h.dtype)


def pconv_fftw(ws):
    return irfft_rows(prod_layers(_rfft_layers(ws)), ws.shape[-1], ws.dtype)


def pconv_jvp_fftw(ws, dws):
    return irfft_rows(prod_layers_jvp(_rfft_layers(ws), _rfft_layers(dws)), ws.shape[-1], ws.dtype)


def pconv_vjp_fftw(ws, g):
    B, L, D = ws.shape
    V = prod_layers_vjp(_rfft_layers(ws), rfft_rows(g))
    return irfft_rows(V.reshape(B * L, D // 2 + 1), D, ws.dtype).reshape(B, L, D)
