"""Gradient descent on eight runs at once, one run per SIMD lane (PROD family).

``gd_lanes`` does what ``_gd.gd_group`` does for diagonal and convolutional nets
(same iteration, same certified step, same guard, same statuses and stats), with
the state laid out runs-innermost: ``W[l, k, r]`` for lane ``r`` of ``NL`` (``LANES`` = 8, or 1
for a run alone: every phase takes a ``tag`` tuple whose length is ``NL``).
Every loop then ends in a loop over the eight lanes of constant length, which
LLVM turns into one 512-bit (or two 256-bit) vector operation: the spectral bins,
the layers and the samples of the data run as plain sequential loops, with no
tails, no horizontal reductions and no per-run branches. Runs that share a dataset
share every load of it.

Each lane's arithmetic is the same sequence of operations whatever the other lanes
hold, so a run gives the same bits in any lane of any group (``fit_many`` results
do not depend on the thread count or on which runs are batched together). The
order of operations differs from ``gd_group`` (sums over bins and samples are
sequential here, blocked there), so the two agree to rounding, not bitwise.

The phases are separate ``noalias`` kernels: with every array an argument, LLVM
knows that they do not overlap and vectorizes the lane loops without runtime
overlap checks. Callers pass distinct arrays for distinct arguments.
"""

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload
from numba.np.arrayobj import populate_array

from ._config import ieee_inline_kernel, ieee_kernel, noalias_kernel
from ._gd import (
    EXP_LOSS, LOG_TINY, NONFINITE, RUNNING, STATIONARY, STUCK,
    ST_HALVINGS, ST_LOG_ETA, ST_LOG_LOSS, ST_MIN_MARGIN, ST_STATUS, ST_STEPS, _LN2_HI, _LN2_LO,
    _LOG2E, _log_softplus, _softplus, guard_refuses, is_finite, segment_certified, step_multiplier,
)

LANES = 8
U64 = np.uint64  # flat indices are unsigned: Numba tests signed ones for wraparound

__all__ = ["LANES", "gd_lanes"]


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (LLVM ``llvm.fma``). Explicit, so it is the
    same operation in every lane whether LLVM vectorizes it or not (contraction by
    ``fastmath`` is the compiler's choice, which may differ between lanes)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f64, [f64, f64, f64]), "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _pow2(typingctx, n):
    """``2.0 ** n`` for a float64 ``n`` holding an integer in [-1022, 1023], built
    from its bits (LLVM vectorizes it; a table lookup is a gather)."""
    sig = types.float64(types.float64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        i = builder.fptosi(args[0], i64)
        i = builder.shl(builder.add(i, ir.Constant(i64, 1023)), ir.Constant(i64, 52))
        return builder.bitcast(i, ir.DoubleType())

    return sig, codegen


def _minmax_intrinsic(name):
    """``llvm.maxnum.f64`` / ``llvm.minnum.f64``: the larger (smaller) of two
    numbers, a NaN argument ignored (IEEE maxNum), as an operation LLVM vectorizes.
    A select written ``a if a > b else b`` into the array it reads becomes a masked
    store, which the next load of that array cannot forward from (a stall)."""

    @intrinsic
    def fn(typingctx, a, b):
        sig = types.float64(types.float64, types.float64)

        def codegen(context, builder, signature, args):
            f64 = ir.DoubleType()
            f = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f64, [f64, f64]), name)
            return builder.call(f, args)

        return sig, codegen

    return fn


fmax = _minmax_intrinsic("llvm.maxnum.f64")
fmin = _minmax_intrinsic("llvm.minnum.f64")


@intrinsic
def select(typingctx, c, a, b):
    """``a if c else b`` as one LLVM ``select``: no branch, so the SLP vectorizer
    can turn eight unrolled copies of it into one vector operation (Numba lowers a
    conditional expression to branches, which it cannot)."""
    sig = types.float64(types.boolean, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.select(args[0], args[1], args[2])

    return sig, codegen


@intrinsic
def prefetch(typingctx, arr, i):
    """Ask for the cache line holding ``arr.flat[i]`` (LLVM ``llvm.prefetch``, a read,
    into every level): no effect on any value, and harmless past the end of
    ``arr`` (a prefetch does not fault)."""
    sig = types.void(arr, i)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


_SUMS8_ROWS = (0, 2, 4, 6, 1, 3, 5, 7)  # the vector each row enters the tree as
_SUMS8_TREE = (
    ((0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)),  # lane t + lane t + 4
    ((0, 1, 4, 5, 8, 9, 12, 13), (2, 3, 6, 7, 10, 11, 14, 15)),  # ... + lane t + 2
    ((0, 8, 2, 10, 4, 12, 6, 14), (1, 9, 3, 11, 5, 13, 7, 15)),  # ... + lane t + 1
)


@intrinsic
def lane_sums8(typingctx, v, m, o):
    """``m[o + k] = ((v_k[0] + v_k[4]) + (v_k[2] + v_k[6])) + ((v_k[1] + v_k[5]) +
    (v_k[3] + v_k[7]))`` for the eight rows ``v_k = v[8 k:8 k + 8]`` (the order of
    ``_bins._lane_sum``, so the same bits): the eight sums at once as a transposed
    tree of three levels, each pair of vectors split by two shuffles and added,
    14 shuffles and 7 vector additions in all, one 512-bit store. Written out
    row by row, LLVM sums each row on its own (about 40 instructions per four
    rows). ``v`` and ``m`` are contiguous float64 arrays; the caller checks the
    bounds."""
    sig = types.void(v, m, o)

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        vec = ir.VectorType(f64, 8)
        src = context.make_array(signature.args[0])(context, builder, args[0])
        dst = context.make_array(signature.args[1])(context, builder, args[1])
        rows = []
        for k in _SUMS8_ROWS:
            p = builder.gep(src.data, [ir.Constant(ir.IntType(64), 8 * k)])
            rows.append(builder.load(builder.bitcast(p, vec.as_pointer()), align=8))
        i32 = ir.IntType(32)
        for lo, hi in _SUMS8_TREE:
            mlo = ir.Constant(ir.VectorType(i32, 8), [i32(x) for x in lo])
            mhi = ir.Constant(ir.VectorType(i32, 8), [i32(x) for x in hi])
            rows = [builder.fadd(builder.shuffle_vector(a, b, mlo), builder.shuffle_vector(a, b, mhi))
                    for a, b in zip(rows[0::2], rows[1::2])]
        p = builder.gep(dst.data, [args[2]])
        builder.store(rows[0], builder.bitcast(p, vec.as_pointer()), align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def borrowed(typingctx, arr):
    """A view of ``arr`` that owns nothing (a null meminfo). Numba counts references
    to an owned array with atomic increments and decrements, each a full memory
    barrier, wherever it passes one to a function or an inlined helper (dozens per
    round of a loop like ``_lanes_rounds``); for a view that owns nothing these are
    a test of a null pointer. The caller keeps ``arr`` alive while the view is in
    use (``keep_alive``)."""
    if not isinstance(arr, types.Array):
        return None
    sig = arr(arr)

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        dst = context.make_array(signature.return_type)(context, builder)
        populate_array(dst, data=src.data, shape=src.shape, strides=src.strides, itemsize=src.itemsize,
                       meminfo=None)
        return dst._getvalue()

    return sig, codegen


@intrinsic
def lanes_fixed(typingctx, arr, tag):
    """``arr`` (C-contiguous, last axis the ``len(tag)`` lanes) with that extent a
    compile-time constant in its shape and strides, so that LLVM knows every
    lane-innermost index step (no strides loaded and kept in registers). Owns
    nothing (see ``borrowed``)."""
    if not isinstance(arr, types.Array) or arr.layout != "C":
        return None
    NL = len(tag)
    sig = arr(arr, tag)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        src = context.make_array(aryty)(context, builder, args[0])
        dst = context.make_array(aryty)(context, builder)
        shapes = cgutils.unpack_tuple(builder, src.shape, aryty.ndim)
        intp = shapes[0].type
        shapes[-1] = ir.Constant(intp, NL)
        strides = [None] * aryty.ndim
        st = ir.Constant(intp, aryty.dtype.bitwidth // 8)
        for i in range(aryty.ndim - 1, -1, -1):
            strides[i] = st
            st = builder.mul(st, shapes[i])
        populate_array(dst, data=src.data, shape=shapes, strides=strides, itemsize=src.itemsize, meminfo=None)
        return dst._getvalue()

    return sig, codegen


@ieee_kernel
def keep_alive(owners):
    """Nothing; a call at the end of a function keeps ``owners`` (a tuple of the
    arrays whose ``borrowed`` views it used) alive until then."""
    return None


@ieee_inline_kernel
def exp_nonpos(d):
    """``exp(d)`` for ``d <= 0``, and 0 for ``d <= LOG_TINY``: the reduction and
    Taylor polynomial of ``_gd.exp_block`` with explicit ``fma``, elementwise, so
    LLVM vectorizes it across the lanes of the loop that calls it."""
    x = max(d, -708.0)
    j = np.floor(x * _LOG2E + 0.5)
    y = fma(-j, _LN2_LO, fma(-j, _LN2_HI, x))
    # sum_{k <= 13} y^k / k! by Estrin's scheme (pairs, then y^2, y^4, y^8): a
    # dependency chain of five multiply-adds instead of Horner's fourteen
    y2 = y * y
    y4 = y2 * y2
    y8 = y4 * y4
    q0 = fma(y, 1.0, 1.0)
    q1 = fma(y, 1.0 / 6.0, 0.5)
    q2 = fma(y, 1.0 / 120.0, 1.0 / 24.0)
    q3 = fma(y, 1.0 / 5040.0, 1.0 / 720.0)
    q4 = fma(y, 1.0 / 362880.0, 1.0 / 40320.0)
    q5 = fma(y, 1.0 / 39916800.0, 1.0 / 3628800.0)
    q6 = fma(y, 1.0 / 6227020800.0, 1.0 / 479001600.0)
    r0 = fma(q1, y2, q0)
    r1 = fma(q3, y2, q2)
    r2 = fma(q5, y2, q4)
    p = fma(fma(q6, y4, r2), y8, fma(r1, y4, r0))
    return select(d > LOG_TINY, p * _pow2(j), 0.0)


@noalias_kernel
def lanes_trial(tag, Wr, Wi, Ur, Ui, mult, tWr, tWi, tCr, tCi, bR, bI):
    """The trial points ``tW = W + mult_r U``, their prefix products ``tC_l = prod_{j < l}
    tW_j`` for ``l >= 1`` (the direction at an accepted point reuses them; ``tC_0 = 1``
    is never written) and ``b = prod_l tW_l``, in one sweep."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    Wr, Wi, Ur, Ui, tWr, tWi = (lanes_fixed(Wr, tag), lanes_fixed(Wi, tag), lanes_fixed(Ur, tag),
                                lanes_fixed(Ui, tag), lanes_fixed(tWr, tag), lanes_fixed(tWi, tag))
    tCr, tCi, bR, bI = lanes_fixed(tCr, tag), lanes_fixed(tCi, tag), lanes_fixed(bR, tag), lanes_fixed(bI, tag)
    L, K = Wr.shape[0], Wr.shape[1]
    Ki = Wi.shape[1]
    for k in range(K):
        for r in range(NL):
            x = fma(mult[r], Ur[0, k, r], Wr[0, k, r])
            tWr[0, k, r] = x
            bR[k, r] = x
    for k in range(Ki):
        for r in range(NL):
            x = fma(mult[r], Ui[0, k, r], Wi[0, k, r])
            tWi[0, k, r] = x
            bI[k, r] = x
    for l in range(1, L):
        if Ki == 0:
            for k in range(K):
                for r in range(NL):
                    x = fma(mult[r], Ur[l, k, r], Wr[l, k, r])
                    tWr[l, k, r] = x
                    br = bR[k, r]
                    tCr[l, k, r] = br
                    bR[k, r] = br * x
        else:
            for k in range(K):
                for r in range(NL):
                    wr = fma(mult[r], Ur[l, k, r], Wr[l, k, r])
                    wi = fma(mult[r], Ui[l, k, r], Wi[l, k, r])
                    tWr[l, k, r] = wr
                    tWi[l, k, r] = wi
                    br = bR[k, r]
                    bi = bI[k, r]
                    tCr[l, k, r] = br
                    tCi[l, k, r] = bi
                    bR[k, r] = fma(br, wr, -(bi * wi))
                    bI[k, r] = fma(br, wi, bi * wr)


@noalias_kernel
def lanes_direction(tag, Wr, Wi, Cr, Ci, GR, GI, ipw, pw, Ur, Ui, a, um, u2, sr, si):
    """Ascent directions ``U_l = (G / pw) conj(prod_{j != l} W_j)`` per lane, the layer
    magnitudes ``a_l = max_k |W_l[k]|``, ``um_l = max_k |U_l[k]|`` and ``u2 = ||U||^2``
    (time domain, Parseval weights ``pw``, inverses ``ipw``, both (K, NL)), from the
    prefix products ``C_l = prod_{j < l} W_j`` that the trial which made ``W`` left
    (``C_0 = 1``): one sweep down the layers, ``U_l = s_l conj(C_l)`` with the suffix
    chain ``s_l = (G / pw) conj(prod_{j > l} W_j)`` running in ``sr, si`` (K, NL)."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    Wr, Wi, Cr, Ci, Ur, Ui = (lanes_fixed(Wr, tag), lanes_fixed(Wi, tag), lanes_fixed(Cr, tag),
                              lanes_fixed(Ci, tag), lanes_fixed(Ur, tag), lanes_fixed(Ui, tag))
    GR, GI, ipw, pw = lanes_fixed(GR, tag), lanes_fixed(GI, tag), lanes_fixed(ipw, tag), lanes_fixed(pw, tag)
    a, um, sr, si = lanes_fixed(a, tag), lanes_fixed(um, tag), lanes_fixed(sr, tag), lanes_fixed(si, tag)
    L, K = Wr.shape[0], Wr.shape[1]
    Ki = Wi.shape[1]
    for r in range(NL):
        u2[r] = 0.0
    for k in range(K):
        for r in range(NL):
            sr[k, r] = GR[k, r] * ipw[k, r]
    for k in range(Ki):
        for r in range(NL):
            si[k, r] = GI[k, r] * ipw[k, r]
    for l in range(L - 1, -1, -1):
        for r in range(NL):
            a[l, r] = 0.0
            um[l, r] = 0.0
        if Ki == 0:
            for k in range(K):
                for r in range(NL):
                    x = sr[k, r]
                    uk = x * Cr[l, k, r]
                    Ur[l, k, r] = uk
                    w = Wr[l, k, r]
                    sr[k, r] = x * w
                    w2 = w * w
                    uu = uk * uk
                    # maxima that LLVM keeps in registers: a select is one vmaxpd
                    # (maxnum needs a NaN fix-up); a NaN w2 or uu is skipped either way
                    a[l, r] = select(w2 > a[l, r], w2, a[l, r])
                    um[l, r] = select(uu > um[l, r], uu, um[l, r])
                    u2[r] = fma(pw[k, r], uu, u2[r])
        else:
            for k in range(K):
                for r in range(NL):
                    xr = sr[k, r]
                    xi = si[k, r]
                    p_r = Cr[l, k, r]
                    p_i = Ci[l, k, r]
                    ur = fma(xr, p_r, xi * p_i)
                    ui = fma(xi, p_r, -(xr * p_i))
                    Ur[l, k, r] = ur
                    Ui[l, k, r] = ui
                    wr = Wr[l, k, r]
                    wi = Wi[l, k, r]
                    sr[k, r] = fma(xr, wr, xi * wi)
                    si[k, r] = fma(xi, wr, -(xr * wi))
                    w2 = fma(wr, wr, wi * wi)
                    uu = fma(ur, ur, ui * ui)
                    a[l, r] = select(w2 > a[l, r], w2, a[l, r])
                    um[l, r] = select(uu > um[l, r], uu, um[l, r])
                    u2[r] = fma(pw[k, r], uu, u2[r])
        for r in range(NL):
            a[l, r] = np.sqrt(a[l, r])
            um[l, r] = np.sqrt(um[l, r])


@noalias_kernel
def lanes_smoothness(tag, a, X2, Xh, S, Gm, w):
    """``_gd.smoothness`` per lane (``X2, Xh`` (NL,)) from the magnitudes ``a`` (L, NL): with
    ``P = prod_j a_j`` and ``T = sum_j 1 / a_j``, ``q_l = P / a_l`` and
    ``sum_{k != l} prod_{j != l, k} a_j = q_l (T - 1 / a_l)``; by plain products when
    some magnitude is zero. ``w`` (5 + L, NL) is work."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    a, X2, Xh, S, Gm, w = (lanes_fixed(a, tag), lanes_fixed(X2, tag), lanes_fixed(Xh, tag), lanes_fixed(S, tag),
                           lanes_fixed(Gm, tag), lanes_fixed(w, tag))
    L = a.shape[0]
    positive = True
    for j in range(L):
        for r in range(NL):
            if not a[j, r] > 0.0:
                positive = False
    for r in range(NL):
        w[0, r] = 0.0  # sum_l q_l^2
        w[1, r] = 0.0  # max_l sum_{k != l} prod_{j != l, k} a_j
    if positive:
        # with one division per layer (rows 5.. of w hold 1 / a_l)
        for r in range(NL):
            w[2, r] = 1.0
            w[3, r] = 0.0
        for j in range(L):
            for r in range(NL):
                w[5 + j, r] = 1.0 / a[j, r]
        for j in range(L):
            for r in range(NL):
                w[2, r] *= a[j, r]
                w[3, r] += w[5 + j, r]
        for l in range(L):
            for r in range(NL):
                q = w[2, r] * w[5 + l, r]
                hs = q * (w[3, r] - w[5 + l, r])
                w[0, r] += q * q
                w[1, r] = fmax(w[1, r], hs)
    else:
        for l in range(L):
            for r in range(NL):
                w[2, r] = 1.0  # q_l = prod_{j != l} a_j
                w[3, r] = 0.0
            for j in range(L):
                if j != l:
                    for r in range(NL):
                        w[2, r] *= a[j, r]
            for k in range(L):
                if k == l:
                    continue
                for r in range(NL):
                    w[4, r] = 1.0
                for j in range(L):
                    if j != l and j != k:
                        for r in range(NL):
                            w[4, r] *= a[j, r]
                for r in range(NL):
                    w[3, r] += w[4, r]
            for r in range(NL):
                w[0, r] += w[2, r] * w[2, r]
                w[1, r] = fmax(w[1, r], w[3, r])
    for r in range(NL):
        S[r] = X2[r] * w[0, r] + Xh[r] * w[1, r]
        Gm[r] = np.sqrt(X2[r] * w[0, r])


def _zat(Z, i, j, r):
    """``Z[i, j]`` for data shared by the lanes (2-D), ``Z[i, j, r]`` for data of
    each lane's own (3-D): the same value either way, so a lane's arithmetic, and
    its bits, do not depend on whether its dataset is shared."""


@overload(_zat, inline="always")
def _zat_impl(Z, i, j, r):
    if Z.ndim == 2:
        return lambda Z, i, j, r: Z[i, j]
    return lambda Z, i, j, r: Z[i, j, r]


@ieee_inline_kernel
def _lanes_matvec(tag, ZT, b, m):
    """``m[n, r] += sum_k ZT[k, n(, r)] b[k, r]``, four bins per sweep over the samples
    (each lane's sum is still accumulated in the order k = 0, 1, 2, ...)."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    K, N = ZT.shape[0], ZT.shape[1]
    K4 = K - K % 4
    for k in range(0, K4, 4):
        for n in range(N):
            for r in range(NL):
                m[n, r] = fma(_zat(ZT, k + 3, n, r), b[k + 3, r], fma(_zat(ZT, k + 2, n, r), b[k + 2, r],
                              fma(_zat(ZT, k + 1, n, r), b[k + 1, r], fma(_zat(ZT, k, n, r), b[k, r], m[n, r]))))
    for k in range(K4, K):
        for n in range(N):
            for r in range(NL):
                m[n, r] = fma(_zat(ZT, k, n, r), b[k, r], m[n, r])


@ieee_inline_kernel
def _lanes_rmatvec(tag, Z, e, G):
    """``G[k, r] = sum_n e[n NL + r] Z[n, k(, r)]``, four samples per sweep over the bins."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    N, K = Z.shape[0], Z.shape[1]
    for k in range(K):
        for r in range(NL):
            G[k, r] = 0.0
    N4 = N - N % 4
    for n in range(0, N4, 4):
        for k in range(K):
            for r in range(NL):
                g = fma(e[U64(n * NL + r)], _zat(Z, n, k, r), G[k, r])
                g = fma(e[U64((n + 1) * NL + r)], _zat(Z, n + 1, k, r), g)
                g = fma(e[U64((n + 2) * NL + r)], _zat(Z, n + 2, k, r), g)
                G[k, r] = fma(e[U64((n + 3) * NL + r)], _zat(Z, n + 3, k, r), g)
    for n in range(N4, N):
        for k in range(K):
            for r in range(NL):
                G[k, r] = fma(e[U64(n * NL + r)], _zat(Z, n, k, r), G[k, r])


@noalias_kernel
def lanes_pass(tag, ZR, ZI, ZRT, ZIT, bR, bI, loss, m, e, GR, GI, out):
    """One pass over the data for every lane: margins ``m[n, r] = <Z_n, b_r>``, the
    softmax weights ``e[n NL + r] = exp(a_n - Ma_r)`` (``a_n = -m_n``, or
    ``log sigmoid(-m_n)`` for the logistic loss), ``G_r = sum_n e[n NL + r] Z_n``, and per
    lane ``out[:, r] = (log L, Ma, sum_n e, min margin)``. Two passes over ``Z`` (the
    maximum is known before any exponential: no rescaling), shared by all lanes or
    (3-D data) each lane's own."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    N = ZR.shape[0]
    for n in range(N):
        for r in range(NL):
            m[n, r] = 0.0
    _lanes_matvec(tag, ZRT, bR, m)
    _lanes_matvec(tag, ZIT, bI, m)
    for r in range(NL):
        out[1, r] = -np.inf
        out[3, r] = np.inf
        out[4, r] = -np.inf
    if loss == EXP_LOSS:
        for n in range(N):
            for r in range(NL):
                x = m[n, r]
                out[3, r] = fmin(out[3, r], x)
                e[U64(n * NL + r)] = -x
                out[1, r] = fmax(out[1, r], -x)
    else:
        for n in range(N):
            for r in range(NL):
                x = m[n, r]
                out[3, r] = x if x < out[3, r] else out[3, r]
                av = -_softplus(x)
                e[U64(n * NL + r)] = av
                out[1, r] = av if av > out[1, r] else out[1, r]
                la = _log_softplus(-x)
                out[4, r] = la if la > out[4, r] else out[4, r]
    # e = exp(a - Ma): the vectorizable exp of _gd.exp_block, elementwise, in one
    # flat loop (the loop vectorizer; eight unrolled copies would stay scalar)
    for n in range(N):
        for r in range(NL):
            e[U64(n * NL + r)] = e[U64(n * NL + r)] - out[1, r]
    for i in range(N * NL):
        e[U64(i)] = exp_nonpos(e[U64(i)])
    for r in range(NL):
        out[2, r] = 0.0
    for n in range(N):
        for r in range(NL):
            out[2, r] += e[U64(n * NL + r)]
    _lanes_rmatvec(tag, ZR, e, GR)
    _lanes_rmatvec(tag, ZI, e, GI)
    if loss == EXP_LOSS:
        for r in range(NL):
            out[0, r] = out[1, r] + np.log(out[2, r])
    else:
        for r in range(NL):
            out[5, r] = 0.0
        for n in range(N):
            for r in range(NL):
                la = _log_softplus(-m[n, r])
                if la - out[4, r] > LOG_TINY:
                    out[5, r] += np.exp(la - out[4, r])
        for r in range(NL):
            out[0, r] = out[4, r] + np.log(out[5, r])


@noalias_kernel
def lanes_accept(tag, acc, tWr, tWi, tCr, tCi, Wr, Wi, Cr, Ci, GnR, GnI, GR, GI):
    """Lanes with ``acc[r]`` take their trial point, its prefix products and its
    gradient sum."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    L, K = Wr.shape[0], Wr.shape[1]
    Ki = Wi.shape[1]
    for l in range(L):
        for k in range(K):
            for r in range(NL):
                Wr[l, k, r] = tWr[l, k, r] if acc[r] else Wr[l, k, r]
                Cr[l, k, r] = tCr[l, k, r] if acc[r] else Cr[l, k, r]
        for k in range(Ki):
            for r in range(NL):
                Wi[l, k, r] = tWi[l, k, r] if acc[r] else Wi[l, k, r]
                Ci[l, k, r] = tCi[l, k, r] if acc[r] else Ci[l, k, r]
    for k in range(K):
        for r in range(NL):
            GR[k, r] = GnR[k, r] if acc[r] else GR[k, r]
    for k in range(Ki):
        for r in range(NL):
            GI[k, r] = GnI[k, r] if acc[r] else GI[k, r]


@ieee_kernel
def gd_lanes(tag, thetas, L, K, Ki, Z, pw, X2, Xh, loss, adaptive, step, steps, stats):
    """``_gd.gd_group`` for the PROD family (``Ki = 0``: diagonal; ``Ki = K``:
    convolutional): at most ``NL = len(tag)`` runs, one per lane, sharing the dataset
    ``Z`` (N, P). ``tag`` is any tuple of that length (``(0,) * LANES``; ``(0,)`` for
    one run alone): Numba compiles one loop per length, with every lane loop of
    constant length. Same arguments and contract as ``gd_group`` (``thetas`` (R, P)
    and ``stats`` (R, N_STATS) updated in place; runs not RUNNING are left alone),
    except ``X2, Xh`` (R,): per run. Lanes beyond R are idle. A run gets the same bits
    for every ``NL`` and lane."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    R = thetas.shape[0]
    if R > NL or X2.shape[0] != R or Xh.shape[0] != R:
        raise ValueError("gd_lanes takes at most len(tag) runs and one X2, Xh per run")
    ZR = np.ascontiguousarray(Z[:, :K])
    ZI = np.ascontiguousarray(Z[:, K:K + Ki])
    ZRT = np.ascontiguousarray(ZR.T)
    ZIT = np.ascontiguousarray(ZI.T)
    _lanes_rounds(tag, thetas, L, K, Ki, ZR, ZI, ZRT, ZIT, pw, X2, Xh, loss, adaptive, step, steps, stats)


@ieee_kernel
def gd_lanes_each(tag, thetas, L, K, Ki, Zs, pw, X2, Xh, loss, adaptive, step, steps, stats):
    """``gd_lanes`` with a dataset per run: ``Zs`` (R, N, P). A run gives the same
    bits here as in ``gd_lanes`` (the lanes read the same values)."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    R = thetas.shape[0]
    if R > NL or Zs.shape[0] != R or X2.shape[0] != R or Xh.shape[0] != R:
        raise ValueError("gd_lanes_each takes at most len(tag) runs, one dataset, X2, Xh per run")
    N = Zs.shape[1]
    ZR = np.empty((N, K, NL))
    ZI = np.empty((N, Ki, NL))
    ZRT = np.empty((K, N, NL))
    ZIT = np.empty((Ki, N, NL))
    for r in range(NL):
        src = r if r < R else 0  # idle lanes: a copy of run 0's data
        for n in range(N):
            for k in range(K):
                ZR[n, k, r] = Zs[src, n, k]
                ZRT[k, n, r] = Zs[src, n, k]
            for k in range(Ki):
                ZI[n, k, r] = Zs[src, n, K + k]
                ZIT[k, n, r] = Zs[src, n, K + k]
    _lanes_rounds(tag, thetas, L, K, Ki, ZR, ZI, ZRT, ZIT, pw, X2, Xh, loss, adaptive, step, steps, stats)


@ieee_kernel
def _lanes_rounds(tag, thetas, L, K, Ki, ZR, ZI, ZRT, ZIT, pw, X2r, Xhr, loss, adaptive, step, steps, stats):
    """The rounds of ``gd_lanes``, for the data in either layout."""
    NL = len(tag)  # lanes: a compile-time constant (the tuple's length)
    R = thetas.shape[0]
    N = ZR.shape[0]
    nk = L * K
    X2 = np.empty(NL)
    Xh = np.empty(NL)
    for r in range(NL):
        X2[r] = X2r[r if r < R else 0]
        Xh[r] = Xhr[r if r < R else 0]
    pw2 = np.empty((K, NL))
    for k in range(K):
        for r in range(NL):
            pw2[k, r] = pw[k]
    ipw = 1.0 / pw2
    Wr = np.zeros((L, K, NL))
    Wi = np.zeros((L, Ki, NL))
    tWr = np.zeros((L, K, NL))
    tWi = np.zeros((L, Ki, NL))
    Ur = np.zeros((L, K, NL))
    Ui = np.zeros((L, Ki, NL))
    Cr = np.zeros((L, K, NL))  # prefix products; layer 0 is 1 (never written)
    Ci = np.zeros((L, Ki, NL))
    tCr = np.zeros((L, K, NL))
    tCi = np.zeros((L, Ki, NL))
    Cr[0] = 1.0
    tCr[0] = 1.0
    sr = np.empty((K, NL))
    si = np.empty((Ki, NL))
    bR = np.empty((K, NL))
    bI = np.empty((Ki, NL))
    GR = np.zeros((K, NL))
    GI = np.zeros((Ki, NL))
    GnR = np.zeros((K, NL))
    GnI = np.zeros((Ki, NL))
    m = np.empty((N, NL))
    e = np.empty(N * NL)
    out = np.empty((6, NL))
    sw = np.empty((5 + L, NL))
    a = np.zeros((L, NL))
    um = np.zeros((L, NL))
    ab = np.empty((L, NL))
    u2 = np.zeros(NL)
    S = np.empty(NL)
    Gm = np.empty(NL)
    mult = np.zeros(NL)
    ratio = np.ones(NL)
    logL = np.zeros(NL)
    Ma = np.zeros(NL)
    sa = np.ones(NL)
    mmin = np.zeros(NL)
    log_eta = np.zeros(NL)
    stp = np.ones(NL)
    done = np.zeros(NL, np.int64)
    tries = np.zeros(NL, np.int64)
    halv = np.zeros(NL, np.int64)
    status = np.full(NL, STUCK)  # idle lanes
    need = np.ones(NL, np.bool_)
    acc = np.zeros(NL, np.bool_)
    idle = np.ones(NL, np.bool_)  # lanes whose state is never written back
    # from here on every array is a view that owns nothing (``borrowed``: no atomic
    # reference counting when the rounds pass them to the phases and helpers);
    # ``owners`` keeps the arrays alive until the end
    owners = (X2, Xh, pw2, ipw, Wr, Wi, tWr, tWi, Ur, Ui, Cr, Ci, tCr, tCi, sr, si, bR, bI, GR, GI, GnR, GnI, m,
              e, out, sw, a, um, ab, u2, S, Gm, mult, ratio, logL, Ma, sa, mmin, log_eta, stp, done, tries, halv,
              status, need, acc, idle)
    ZR, ZI, ZRT, ZIT = borrowed(ZR), borrowed(ZI), borrowed(ZRT), borrowed(ZIT)
    X2, Xh, pw2, ipw = borrowed(X2), borrowed(Xh), borrowed(pw2), borrowed(ipw)
    Wr, Wi, tWr, tWi = borrowed(Wr), borrowed(Wi), borrowed(tWr), borrowed(tWi)
    Ur, Ui, Cr, Ci, tCr, tCi = borrowed(Ur), borrowed(Ui), borrowed(Cr), borrowed(Ci), borrowed(tCr), borrowed(tCi)
    sr, si, bR, bI = borrowed(sr), borrowed(si), borrowed(bR), borrowed(bI)
    GR, GI, GnR, GnI = borrowed(GR), borrowed(GI), borrowed(GnR), borrowed(GnI)
    m, e, out, sw = borrowed(m), borrowed(e), borrowed(out), borrowed(sw)
    a, um, ab, u2, S, Gm = borrowed(a), borrowed(um), borrowed(ab), borrowed(u2), borrowed(S), borrowed(Gm)
    mult, ratio, logL, Ma, sa = borrowed(mult), borrowed(ratio), borrowed(logL), borrowed(Ma), borrowed(sa)
    mmin, log_eta, stp = borrowed(mmin), borrowed(log_eta), borrowed(stp)
    done, tries, halv, status = borrowed(done), borrowed(tries), borrowed(halv), borrowed(status)
    need, acc, idle = borrowed(need), borrowed(acc), borrowed(idle)
    for r in range(R):
        idle[r] = stats[r, ST_STATUS] != RUNNING
        status[r] = np.int64(stats[r, ST_STATUS])
        log_eta[r] = stats[r, ST_LOG_ETA]
        stp[r] = step[r]
    # idle lanes hold a copy of run 0 (finite numbers; their results are dropped)
    for r in range(NL):
        src = r if r < R else 0
        for l in range(L):
            for k in range(K):
                Wr[l, k, r] = thetas[src, l * K + k]
            for k in range(Ki):
                Wi[l, k, r] = thetas[src, nk + l * K + k]

    # the starting point's b and prefix products: a trial at mult = 0 (W + 0 U = W)
    lanes_trial(tag, Wr, Wi, Ur, Ui, mult, tWr, tWi, Cr, Ci, bR, bI)
    lanes_pass(tag, ZR, ZI, ZRT, ZIT, bR, bI, loss, m, e, GR, GI, out)
    for r in range(NL):
        logL[r] = out[0, r]
        Ma[r] = out[1, r]
        sa[r] = out[2, r]
        mmin[r] = out[3, r]
        if status[r] == RUNNING and not is_finite(logL[r]):
            status[r] = NONFINITE

    while True:
        any_active = False
        for r in range(NL):
            if status[r] == RUNNING and done[r] < steps:
                any_active = True
        if not any_active:
            break
        # 1. directions (recomputed for every lane: a lane that was refused has the
        # same W and G as before, so it gets the same bits back)
        lanes_direction(tag, Wr, Wi, Cr, Ci, GR, GI, ipw, pw2, Ur, Ui, a, um, u2, sr, si)
        if adaptive:
            lanes_smoothness(tag, a, X2, Xh, S, Gm, sw)
        for r in range(NL):
            if status[r] != RUNNING or done[r] >= steps or not need[r]:
                continue
            if adaptive and (u2[r] == 0.0 or S[r] == 0.0):
                status[r] = STATIONARY  # zero gradient: GD stays here forever
                continue
            mult[r], ratio[r] = step_multiplier(adaptive, loss, stp[r], sa[r], Ma[r], logL[r], S[r])
            need[r] = False
            tries[r] = 0
        # 2. certification on the segment, halving lane by lane until it holds
        if adaptive:
            while True:
                for l in range(L):
                    for r in range(NL):
                        ab[l, r] = a[l, r] + mult[r] * um[l, r]
                lanes_smoothness(tag, ab, X2, Xh, S, Gm, sw)
                all_ok = True
                for r in range(NL):
                    if status[r] != RUNNING or done[r] >= steps:
                        continue
                    if not segment_certified(mult[r], ratio[r], S[r], Gm[r], u2[r]):
                        mult[r] *= 0.5
                        halv[r] += 1
                        all_ok = False
                if all_ok:
                    break
        # 3. trial points and one pass over the data for all lanes
        lanes_trial(tag, Wr, Wi, Ur, Ui, mult, tWr, tWi, tCr, tCi, bR, bI)
        lanes_pass(tag, ZR, ZI, ZRT, ZIT, bR, bI, loss, m, e, GnR, GnI, out)
        # 4. accept, or halve (the guard: the loss never increases)
        for r in range(NL):
            acc[r] = False
            if status[r] != RUNNING or done[r] >= steps:
                continue
            logLn = out[0, r]
            if guard_refuses(r, adaptive, logLn, logL, tries, halv, mult, status):
                continue
            if done[r] == steps - 1:
                log_eta[r] = (np.log(mult[r]) if mult[r] > 0.0 else -np.inf) - Ma[r]
            acc[r] = True
            logL[r] = logLn
            Ma[r] = out[1, r]
            sa[r] = out[2, r]
            mmin[r] = out[3, r]
            done[r] += 1
            need[r] = True
            if not is_finite(logLn):
                status[r] = NONFINITE
        # accepted trial points become current: swap the buffers when every lane
        # whose state matters accepted (the usual case), else copy lane by lane
        swap = True
        for r in range(NL):
            if not acc[r] and not idle[r]:
                swap = False
        if swap:
            Wr, tWr = tWr, Wr
            Wi, tWi = tWi, Wi
            Cr, tCr = tCr, Cr
            Ci, tCi = tCi, Ci
            GR, GnR = GnR, GR
            GI, GnI = GnI, GI
        else:
            lanes_accept(tag, acc, tWr, tWi, tCr, tCi, Wr, Wi, Cr, Ci, GnR, GnI, GR, GI)

    for r in range(R):
        if stats[r, ST_STATUS] != RUNNING:
            continue
        for l in range(L):
            for k in range(K):
                thetas[r, l * K + k] = Wr[l, k, r]
            for k in range(Ki):
                thetas[r, nk + l * K + k] = Wi[l, k, r]
        stats[r, ST_LOG_LOSS] = logL[r]
        stats[r, ST_MIN_MARGIN] = mmin[r]
        stats[r, ST_LOG_ETA] = log_eta[r]
        stats[r, ST_HALVINGS] += halv[r]
        stats[r, ST_STEPS] = done[r]
        stats[r, ST_STATUS] = status[r]
    keep_alive(owners)
