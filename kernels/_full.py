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


# Loops over the flat ``theta`` go through row views (``row = theta[a:b]``, then
# ``row[j]`` with ``j`` from ``range``): indexing ``theta[base + j]`` directly keeps
# LLVM from vectorizing (the index is not provably non-negative, so Numba's
# negative-index wraparound stays in the loop), which made these loops 4-10x slower.


@kernel
def _matvec(theta, o, rows, cols, x, out):
    """out[:rows] = W x, with W = theta[o : o + rows*cols] as (rows, cols)."""
    for i in range(rows):
        row = theta[o + i * cols: o + (i + 1) * cols]
        s = theta.dtype.type(0.0)
        for j in range(cols):
            s += row[j] * x[j]
        out[i] = s


@kernel
def _matvec_jvp(theta, dtheta, o, rows, cols, r, dr, r_out, dr_out):
    """(r_out, dr_out)[:rows] = (W r, dW r + W dr), with W, dW at ``o`` in
    ``theta``, ``dtheta`` as in ``_matvec``: one pass over the rows of W and dW."""
    for i in range(rows):
        w = theta[o + i * cols: o + (i + 1) * cols]
        dw = dtheta[o + i * cols: o + (i + 1) * cols]
        s = theta.dtype.type(0.0)
        ds = theta.dtype.type(0.0)
        for j in range(cols):
            s += w[j] * r[j]
            ds += dw[j] * r[j] + w[j] * dr[j]
        r_out[i] = s
        dr_out[i] = ds


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
        rr = rs[roff[l + 1]: roff[l + 1] + cols]
        last = l == L - 1
        if not last:
            for j in range(cols):
                t[j] = 0.0
        # dW_l = a r_{l+1}^T, and (unless last) t = W_l^T a, row by row
        for i in range(rows):
            ai = a[i]
            dst = out[o + i * cols: o + (i + 1) * cols]
            for j in range(cols):
                dst[j] = ai * rr[j]
            if not last:
                w = theta[o + i * cols: o + (i + 1) * cols]
                for j in range(cols):
                    t[j] += w[j] * ai
        if not last:
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
            _matvec_jvp(theta[b], dtheta[b], offsets[l], n, widths[l + 1], r, dr, t1, t2)
            r[:n] = t1[:n]
            dr[:n] = t2[:n]
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
