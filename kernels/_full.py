"""Fully connected deep linear network, eq. (1): ``beta = W_1 W_2 ... W_L``.

The layers are packed into one flat parameter row per batch element:
``theta[b, offsets[l] : offsets[l] + n_l * n_{l+1}]`` holds ``W_{l+1}`` (0-based
``l``) in C order, with ``widths = (n_0, ..., n_L) = (D, D_1, ..., 1)``. Packing
keeps one compiled specialization for every depth.

With ``r_l = W_l W_{l+1} ... W_{L-1} 1`` (0-based layers, ``r_L = [1]``):
``beta = r_0``, forward mode carries ``(r, dr)``, reverse mode gives
``dW_l = a_l r_{l+1}^T`` with ``a_0 = g`` and ``a_{l+1} = W_l^T a_l``.

The row-level helpers (``chain_offsets``, ``chain_row``, ``vjp_row``) are shared
with the compiled gradient-descent loop.
"""

import numpy as np

from ._config import kernel


@kernel
def _matvec(theta, o, rows, cols, x, out):
    """out[:rows] = W x, with W = theta[o : o + rows*cols] as (rows, cols)."""
    for i in range(rows):
        s = theta.dtype.type(0.0)
        base = o + i * cols
        for j in range(cols):
            s += theta[base + j] * x[j]
        out[i] = s


@kernel
def chain_offsets(widths):
    """Offsets ``roff`` of the partial products r_1..r_L in one buffer:
    ``r_l = rs[roff[l] : roff[l] + widths[l]]``; ``roff[L + 1]`` is its length."""
    L = widths.shape[0] - 1
    roff = np.zeros(L + 2, np.int64)
    for l in range(1, L + 1):
        roff[l + 1] = roff[l] + widths[l]
    return roff


@kernel
def chain_row(theta, widths, offsets, roff, rs, beta):
    """r_L = 1, r_l = W_l r_{l+1} for l = L-1..1 into ``rs``; beta = W_0 r_1."""
    L = widths.shape[0] - 1
    rs[roff[L]] = 1.0
    for l in range(L - 1, 0, -1):
        _matvec(theta, offsets[l], widths[l], widths[l + 1], rs[roff[l + 1]:], rs[roff[l]:])
    _matvec(theta, offsets[0], widths[0], widths[1], rs[roff[1]:], beta)


@kernel
def vjp_row(theta, g, widths, offsets, roff, rs, a, t, out):
    """Gradient of <beta, g> into ``out`` (layout of ``theta``), given ``rs`` from
    ``chain_row``; ``a``, ``t`` are work buffers of length max(widths)."""
    L = widths.shape[0] - 1
    a[: widths[0]] = g
    for l in range(L):
        rows = widths[l]
        cols = widths[l + 1]
        o = offsets[l]
        rr = rs[roff[l + 1]:]
        for i in range(rows):
            ai = a[i]
            for j in range(cols):
                out[o + i * cols + j] = ai * rr[j]
        if l < L - 1:
            # a <- W_l^T a
            for j in range(cols):
                t[j] = 0.0
            for i in range(rows):
                ai = a[i]
                for j in range(cols):
                    t[j] += theta[o + i * cols + j] * ai
            a[:cols] = t[:cols]


@kernel
def pfull_flat(theta, widths, offsets):
    B = theta.shape[0]
    D = widths[0]
    roff = chain_offsets(widths)
    rs = np.empty(roff[-1], theta.dtype)
    out = np.empty((B, D), theta.dtype)
    for b in range(B):
        chain_row(theta[b], widths, offsets, roff, rs, out[b])
    return out


@kernel
def pfull_jvp_flat(theta, dtheta, widths, offsets):
    B = theta.shape[0]
    L = widths.shape[0] - 1
    D = widths[0]
    m = widths.max()
    out = np.empty((B, D), theta.dtype)
    r = np.empty(m, theta.dtype)
    dr = np.empty(m, theta.dtype)
    t1 = np.empty(m, theta.dtype)
    t2 = np.empty(m, theta.dtype)
    for b in range(B):
        r[0] = 1.0
        dr[0] = 0.0
        for l in range(L - 1, -1, -1):
            n = widths[l]
            # (r, dr) <- (W r, dW r + W dr)
            _matvec(dtheta[b], offsets[l], n, widths[l + 1], r, t1)
            _matvec(theta[b], offsets[l], n, widths[l + 1], dr, t2)
            for i in range(n):
                dr[i] = t1[i] + t2[i]
            _matvec(theta[b], offsets[l], n, widths[l + 1], r, t1)
            r[:n] = t1[:n]
        out[b] = dr[:D]
    return out


@kernel
def pfull_vjp_flat(theta, g, widths, offsets):
    B, P = theta.shape
    m = widths.max()
    roff = chain_offsets(widths)
    rs = np.empty(roff[-1], theta.dtype)
    beta = np.empty(widths[0], theta.dtype)
    a = np.empty(m, theta.dtype)
    t = np.empty(m, theta.dtype)
    out = np.empty((B, P), theta.dtype)
    for b in range(B):
        chain_row(theta[b], widths, offsets, roff, rs, beta)
        vjp_row(theta[b], g[b], widths, offsets, roff, rs, a, t, out[b])
    return out
