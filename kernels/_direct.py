"""Direct O(D^2) time-domain kernels for the convolutional network.

Conventions (verified in ``tests/test_kernels.py`` against the literal network
of eqs. (2)-(3) in ``tests/naive.py``; summarized in the README):

* cross-correlation, eq. (2):  ``xcorr(h, w)[d] = sum_k w[k] h[(d + k) mod D]``
* circular convolution:        ``conv(a, b)[m] = sum_k a[k] b[(m - k) mod D]``
* the conv net's predictor:    ``beta = conv(w_1, conv(w_2, ... conv(w_{L-1}, w_L)))``

Both inner loops are written as contiguous dot products over a doubled buffer,
so that LLVM vectorizes them (no ``mod`` in the inner loop).

All functions here are private: they take C-contiguous float32/float64 arrays
of the shapes stated, already validated by the public wrappers.
"""

import numpy as np

from ._config import kernel


@kernel
def _conv_into(a, b, out, buf):
    """out = conv(a, b) for 1-D arrays of length D; ``buf`` has length 2D."""
    D = a.shape[0]
    # buf[t] = b[(D - t) mod D] so that conv[m] = sum_k a[k] buf[k - m + D]
    buf[0] = b[0]
    for t in range(1, D):
        buf[t] = b[D - t]
    for t in range(D):
        buf[D + t] = buf[t]
    for m in range(D):
        s = a.dtype.type(0.0)
        off = D - m
        for k in range(D):
            s += a[k] * buf[off + k]
        out[m] = s


@kernel
def _xcorr_into(h, w, out, buf):
    """out = xcorr(h, w) for 1-D arrays of length D; ``buf`` has length 2D."""
    D = h.shape[0]
    for t in range(D):
        buf[t] = h[t]
        buf[D + t] = h[t]
    for d in range(D):
        s = h.dtype.type(0.0)
        for k in range(D):
            s += w[k] * buf[d + k]
        out[d] = s


@kernel
def xcorr_direct(h, w):
    """Batched eq. (2): ``h, w`` of shape (B, D) -> (B, D)."""
    B, D = h.shape
    out = np.empty_like(h)
    buf = np.empty(2 * D, h.dtype)
    for b in range(B):
        _xcorr_into(h[b], w[b], out[b], buf)
    return out


@kernel
def pconv_direct(ws):
    """``ws`` of shape (B, L, D) -> beta of shape (B, D)."""
    B, L, D = ws.shape
    out = np.empty((B, D), ws.dtype)
    tmp = np.empty(D, ws.dtype)
    buf = np.empty(2 * D, ws.dtype)
    for b in range(B):
        p = out[b]
        p[:] = ws[b, L - 1]
        for l in range(L - 2, -1, -1):
            _conv_into(ws[b, l], p, tmp, buf)
            p[:] = tmp
    return out


@kernel
def pconv_jvp_direct(ws, dws):
    """Forward mode: (B, L, D), (B, L, D) -> d beta of shape (B, D)."""
    B, L, D = ws.shape
    out = np.empty((B, D), ws.dtype)
    p = np.empty(D, ws.dtype)
    t1 = np.empty(D, ws.dtype)
    t2 = np.empty(D, ws.dtype)
    buf = np.empty(2 * D, ws.dtype)
    for b in range(B):
        dp = out[b]
        p[:] = ws[b, L - 1]
        dp[:] = dws[b, L - 1]
        for l in range(L - 2, -1, -1):
            # (p, dp) <- (w_l * p, dw_l * p + w_l * dp)
            _conv_into(dws[b, l], p, t1, buf)
            _conv_into(ws[b, l], dp, t2, buf)
            for i in range(D):
                dp[i] = t1[i] + t2[i]
            _conv_into(ws[b, l], p, t1, buf)
            p[:] = t1
    return out


@kernel
def pconv_vjp_direct(ws, g):
    """Reverse mode: (B, L, D), (B, D) -> gradient of <P(w), g> of shape (B, L, D)."""
    B, L, D = ws.shape
    out = np.empty((B, L, D), ws.dtype)
    # suffix[l] = w_l * w_{l+1} * ... * w_L
    suffix = np.empty((L, D), ws.dtype)
    gbar = np.empty(D, ws.dtype)
    tmp = np.empty(D, ws.dtype)
    buf = np.empty(2 * D, ws.dtype)
    for b in range(B):
        suffix[L - 1] = ws[b, L - 1]
        for l in range(L - 2, 0, -1):
            _conv_into(ws[b, l], suffix[l + 1], suffix[l], buf)
        # beta = w_1 * ... * w_{l-1} * (w_l * suffix_{l+1}); walk l = 1..L with the
        # cotangent gbar of the suffix that starts at layer l.
        gbar[:] = g[b]
        for l in range(L - 1):
            _xcorr_into(gbar, suffix[l + 1], out[b, l], buf)
            _xcorr_into(gbar, ws[b, l], tmp, buf)
            gbar[:] = tmp
        out[b, L - 1] = gbar
    return out
