"""Frequency-domain path on pyFFTW: real-input transforms, planned once.

Each call runs one forward plan (r2c) over all its input rows, one jitted kernel
that reads the r2c plan's output buffer and writes the 1/D-scaled spectral
product straight into the input buffer of one inverse plan (c2r), then that
plan; the result is a copy of the c2r output buffer. So per call: one plan-pair
lookup, one copy in, two ``execute()``, one jitted product, one copy out.

Plan pairs (``pyfftw.FFTW`` objects with their own aligned buffers) are cached
per thread, keyed by (forward rows, inverse rows, D, dtype), least recently used
dropped first. FFTW's planner is not thread safe, so planning runs under one
process-wide lock; executing a plan is thread safe, and each thread executes only
its own plans, so concurrent calls from several threads never share buffers. Plans
are made with FFTW_MEASURE under a short planning time limit; FFTW's wisdom is
process-wide, so a second thread planning the same problem is quick.

Rows of the forward buffer, per operation (B networks of depth L):

* ``xcorr``:  ``h`` (B), then ``w`` (B)            -> B inverse rows
* ``pconv``:  ``ws`` (B*L)                         -> B
* ``jvp``:    ``ws`` (B*L), then ``dws`` (B*L)     -> B
* ``vjp``:    ``ws`` (B*L), then ``g`` (B)         -> B*L

The spectral products are the shared kernels of ``_products``.
"""

import threading
from collections import OrderedDict

import numpy as np
import pyfftw

from ._config import kernel
from ._products import prod_layers_into, prod_layers_jvp_into, prod_layers_vjp_into

PLANNING_TIMELIMIT = 0.25  # seconds per plan
MAX_PLANS_PER_THREAD = 64  # plan pairs

_PLAN_LOCK = threading.Lock()
_local = threading.local()

_COMPLEX = {np.dtype(np.float32): np.dtype(np.complex64), np.dtype(np.float64): np.dtype(np.complex128)}


def _plans(n_in, n_out, D, dtype):
    """This thread's ``(r2c, c2r, r2c input, r2c output, c2r input, c2r output)``
    for ``n_in`` forward and ``n_out`` inverse rows of length ``D``."""
    cache = getattr(_local, "plans", None)
    if cache is None:
        cache = _local.plans = OrderedDict()
    key = (n_in, n_out, D, dtype.char)
    entry = cache.get(key)
    if entry is not None:
        cache.move_to_end(key)
        return entry
    cdtype = _COMPLEX[dtype]
    K = D // 2 + 1
    x = pyfftw.empty_aligned((n_in, D), dtype=dtype)
    X = pyfftw.empty_aligned((n_in, K), dtype=cdtype)
    Y = pyfftw.empty_aligned((n_out, K), dtype=cdtype)
    y = pyfftw.empty_aligned((n_out, D), dtype=dtype)
    with _PLAN_LOCK:
        flags = ("FFTW_MEASURE", "FFTW_DESTROY_INPUT")
        r2c = pyfftw.FFTW(x, X, axes=(-1,), direction="FFTW_FORWARD", flags=flags,
                          threads=1, planning_timelimit=PLANNING_TIMELIMIT)
        c2r = pyfftw.FFTW(Y, y, axes=(-1,), direction="FFTW_BACKWARD", flags=flags,
                          threads=1, planning_timelimit=PLANNING_TIMELIMIT)
    # FFTW_MEASURE scribbles on the buffers while planning; every call refills them.
    entry = (r2c, c2r, r2c.input_array, r2c.output_array, c2r.input_array, c2r.output_array)
    cache[key] = entry
    if len(cache) > MAX_PLANS_PER_THREAD:
        cache.popitem(last=False)
    return entry


def clear_plans():
    """Drop this thread's cached FFTW plans."""
    _local.plans = OrderedDict()


# --------------------------------------------------------------------------- jitted glue


@kernel
def _load1(x, a):
    """Rows of ``x`` <- the (B, ..., D) array ``a``, flattened to rows."""
    xf = x.reshape(x.size)
    af = a.reshape(a.size)
    for i in range(af.shape[0]):
        xf[i] = af[i]


@kernel
def _load2(x, a, b):
    """Rows of ``x`` <- the rows of ``a``, then the rows of ``b``."""
    xf = x.reshape(x.size)
    af = a.reshape(a.size)
    bf = b.reshape(b.size)
    n = af.shape[0]
    for i in range(n):
        xf[i] = af[i]
    for i in range(bf.shape[0]):
        xf[n + i] = bf[i]


@kernel
def _xcorr_spectrum(X, Y, scale):
    """Y[b] = scale * H_b conj(W_b), with X = (H; W)."""
    B, K = Y.shape
    for b in range(B):
        h = X[b]
        w = X[B + b]
        y = Y[b]
        for k in range(K):
            y[k] = h[k] * np.conj(w[k]) * scale


@kernel
def _pconv_spectrum(X, Y, scale):
    B, K = Y.shape
    L = X.shape[0] // B
    prod_layers_into(X.reshape((B, L, K)), Y, scale)


@kernel
def _pconv_jvp_spectrum(X, Y, scale):
    B, K = Y.shape
    L = X.shape[0] // (2 * B)
    W = X[: B * L].reshape((B, L, K))
    dW = X[B * L:].reshape((B, L, K))
    prod_layers_jvp_into(W, dW, Y, scale, np.empty(K, Y.dtype))


@kernel
def _pconv_vjp_spectrum(X, Y, scale):
    K = Y.shape[1]
    B = X.shape[0] - Y.shape[0]
    L = Y.shape[0] // B
    W = X[: B * L].reshape((B, L, K))
    G = X[B * L:]
    prod_layers_vjp_into(W, G, Y.reshape((B, L, K)), scale, np.empty(K, Y.dtype))


# --------------------------------------------------------------------------- the kernels


def xcorr_fftw(h, w):
    """``h, w`` of shape (B, D) -> (B, D)."""
    B, D = h.shape
    r2c, c2r, x, X, Y, y = _plans(2 * B, B, D, h.dtype)
    _load2(x, h, w)
    r2c.execute()
    _xcorr_spectrum(X, Y, h.dtype.type(1.0 / D))
    c2r.execute()
    return y.copy()


def pconv_fftw(ws):
    """``ws`` of shape (B, L, D) -> (B, D)."""
    B, L, D = ws.shape
    r2c, c2r, x, X, Y, y = _plans(B * L, B, D, ws.dtype)
    _load1(x, ws)
    r2c.execute()
    _pconv_spectrum(X, Y, ws.dtype.type(1.0 / D))
    c2r.execute()
    return y.copy()


def pconv_jvp_fftw(ws, dws):
    """(B, L, D), (B, L, D) -> (B, D)."""
    B, L, D = ws.shape
    r2c, c2r, x, X, Y, y = _plans(2 * B * L, B, D, ws.dtype)
    _load2(x, ws, dws)
    r2c.execute()
    _pconv_jvp_spectrum(X, Y, ws.dtype.type(1.0 / D))
    c2r.execute()
    return y.copy()


def pconv_vjp_fftw(ws, g):
    """(B, L, D), (B, D) -> (B, L, D)."""
    B, L, D = ws.shape
    r2c, c2r, x, X, Y, y = _plans(B * L + B, B * L, D, ws.dtype)
    _load2(x, ws, g)
    r2c.execute()
    _pconv_vjp_spectrum(X, Y, ws.dtype.type(1.0 / D))
    c2r.execute()
    return y.reshape(B, L, D).copy()
