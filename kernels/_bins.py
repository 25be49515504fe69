"""Gradient descent on diagonal or convolutional nets, spectral bins in SIMD lanes.

``gd_bins`` does for runs on one dataset what ``_gd.gd_group`` does (same
iteration, certified step, guard, statuses and stats), each run's state laid out for the
vector units: the ``S`` bin slots of each layer in blocks of ``LANE`` = 8 (flat
arrays, ``W[l S + s]``), every reduction written as a loop over the blocks around
a loop of constant length 8, which LLVM turns into one 512-bit (or two 256-bit)
operation. Slots are zero-padded: a zero bin has a zero gradient, adds zero to
every margin and sum, and stays zero.

Small spectra (up to ``STATIC_MAX_BLOCKS`` blocks) are compiled for their block
count, rounded up to 1, 2, 4 or 8: ``tag[0]`` is a tuple of that length, a
compile-time constant, so every loop over the slots has a constant trip count and
every index is a constant offset (LLVM unrolls the loops into straight vector
code). Larger spectra pass ``tag[0] = ()`` and run the same code with a run-time
block count. Up to ``STATIC_LAYERS_MAX_BLOCKS`` blocks the depth is a
compile-time constant too (``tag[1]``, of length L; else ``()``): the loops over
the layers unroll and the per-layer scalars (square roots, the smoothness bound)
vectorize. ``tag[2]`` says which spectra these are, as its length: 0 real (diag),
1 complex (conv, odd D), 2 complex with DC and Nyquist packed (conv, even D); the
branches on it fold away. Each tag is one compilation (about 25-30 s, most of it
Numba's type inference of the inlined phases). Flat indices are unsigned: Numba
tests a signed index for wraparound, which LLVM cannot remove from computed
indices (a 10x slowdown).

The runs of one call are independent (each sweep of the loop gives every
unfinished run one attempt) and a run's arithmetic does not depend on the
others: a run gets the same bits alone or with others.

Real spectra of even length have two real bins, DC and Nyquist; they share slot
0 (DC in the real part, Nyquist in the imaginary part, the usual packing of a
real FFT), so that a spectrum of ``D`` points takes ``ceil(D / 2)`` complex slots
(16 for ``D = 32``: two blocks, no tail). The vector loops treat slot 0 as a
complex number like the others, with its contribution to the layer maxima and to
``||U||^2`` masked out; a scalar fix-up then redoes slot 0 as the two real bins it
holds.

The whole loop is one ``noalias`` kernel (every array an argument that no other
overlaps, so LLVM vectorizes without overlap checks) with the phases inlined,
compiled with strict IEEE arithmetic and explicit ``fma``: no reassociation, so
the loop vectorizer leaves the lane loops to the SLP vectorizer (it would
otherwise vectorize the loops over blocks, with strided loads). Every array starts
on a 64-byte boundary. The order of operations differs from ``gd_group`` (blocked
sums), so the two agree to rounding, not bitwise; a run's bits are fixed by its
inputs.
"""

import numpy as np
from ._config import ieee_inline_kernel, kernel, noalias_kernel
from ._gd import (
    BLOCK, EXP_LOSS, LOG_TINY, N_PS, NONFINITE, PS_MA, PS_ML, PS_MMIN, PS_SA, PS_SL, RUNNING, STATIONARY,
    ST_HALVINGS, ST_LOG_ETA, ST_LOG_LOSS, ST_MIN_MARGIN, ST_STATUS, ST_STEPS,
    CERT, exp_block, guard_refuses, logistic_weight, prod_row_measures, smoothness, step_multiplier,
)

from ._lanes import U64, exp_nonpos, fma, fmax, fmin, lane_sums8, prefetch

LANE = 8
assert BLOCK == 16  # the pass's sixteen-wide loops
TRANSPOSED_MAX_BLOCKS = 4  # slot blocks up to which the margins use Z transposed
STATIC_MAX_BLOCKS = 8  # slot blocks up to which the loop is compiled for its block count
STATIC_LAYERS_MAX_BLOCKS = 2  # ... and up to which it is also compiled for its depth
STATIC_MAX_LAYERS = 8

__all__ = ["LANE", "bins_layout", "gd_bins", "gd_bins_history"]


@ieee_inline_kernel
def _mx(a, b):
    return a if a > b else b


@ieee_inline_kernel
def _lane_max(v):
    """max of the eight lanes of ``v`` as a tree of scalar selects (NaN lanes
    skipped)."""
    return _mx(_mx(_mx(v[0], v[4]), _mx(v[2], v[6])), _mx(_mx(v[1], v[5]), _mx(v[3], v[7])))


@ieee_inline_kernel
def _lane_sum(v):
    """Sum of the eight lanes of ``v``, as a tree (the same order every time)."""
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))


@ieee_inline_kernel
def _max16(v):
    """max of ``v[:16]`` (NaN entries skipped), halving in vectors: 16 -> 8 -> 4 -> 2 -> 1."""
    a0, a1, a2, a3 = fmax(v[0], v[8]), fmax(v[1], v[9]), fmax(v[2], v[10]), fmax(v[3], v[11])
    a4, a5, a6, a7 = fmax(v[4], v[12]), fmax(v[5], v[13]), fmax(v[6], v[14]), fmax(v[7], v[15])
    b0, b1, b2, b3 = fmax(a0, a4), fmax(a1, a5), fmax(a2, a6), fmax(a3, a7)
    return fmax(fmax(b0, b2), fmax(b1, b3))


@ieee_inline_kernel
def _min16(v):
    """min of ``v[:16]`` (NaN entries skipped), halving in vectors."""
    a0, a1, a2, a3 = fmin(v[0], v[8]), fmin(v[1], v[9]), fmin(v[2], v[10]), fmin(v[3], v[11])
    a4, a5, a6, a7 = fmin(v[4], v[12]), fmin(v[5], v[13]), fmin(v[6], v[14]), fmin(v[7], v[15])
    b0, b1, b2, b3 = fmin(a0, a4), fmin(a1, a5), fmin(a2, a6), fmin(a3, a7)
    return fmin(fmin(b0, b2), fmin(b1, b3))


@ieee_inline_kernel
def _sum16(v):
    """sum of ``v[:16]`` as a tree (the same order every time)."""
    a = ((v[0] + v[8]) + (v[4] + v[12])) + ((v[2] + v[10]) + (v[6] + v[14]))
    b = ((v[1] + v[9]) + (v[5] + v[13])) + ((v[3] + v[11]) + (v[7] + v[15]))
    return a + b


@ieee_inline_kernel
def _rows16(Z, r, S, s, ev):
    """``sum_{i < 16} ev[i] Z[r + i S + s]`` in registers: four chains of four
    multiply-adds (two chains of eight left the FMA units waiting)."""
    x = ev[0] * Z[U64(r + s)]
    y = ev[4] * Z[U64(r + 4 * S + s)]
    z = ev[8] * Z[U64(r + 8 * S + s)]
    w = ev[12] * Z[U64(r + 12 * S + s)]
    for i in range(1, 4):
        x = fma(ev[i], Z[U64(r + i * S + s)], x)
        y = fma(ev[4 + i], Z[U64(r + (4 + i) * S + s)], y)
        z = fma(ev[8 + i], Z[U64(r + (8 + i) * S + s)], z)
        w = fma(ev[12 + i], Z[U64(r + (12 + i) * S + s)], w)
    return (x + y) + (z + w)


@ieee_inline_kernel
def _block_gradient(tag, Z, G, oS, r0, rn, S, ev):
    """``G[oS + s] += sum_{i < 16} ev[i] Z[r0 + i S + s]`` for every slot ``s`` (one
    part of long rows, real or imaginary). Up to 64 slots (a static block count) a
    block of rows (16 KiB) fits in L1 with the next: the next block's rows (from
    ``rn``; the margins read them next, from L2 otherwise) are asked for while this
    one's are summed (about 5 % at conv (128,128,3)); a larger block would evict this
    one. Only every other line of each row is asked for: the lines between come in
    time all the same (the processor's own prefetchers, presumably), and each
    prefetch takes a load slot from the sums (asking for every line: 3 % slower)."""
    if len(tag[0]) > 0:
        for j in range(S // LANE):
            if j % 2 == 0:
                for q in range(BLOCK):
                    prefetch(Z, U64(rn + q * S + j * LANE))
            for t in range(LANE):
                s = j * LANE + t
                G[U64(oS + s)] += _rows16(Z, r0, S, s, ev)
    else:
        for s in range(S):
            G[U64(oS + s)] += _rows16(Z, r0, S, s, ev)


@ieee_inline_kernel
def _slots(tag, pwr):
    """The number of slots: ``8 len(tag[0])``, a compile-time constant, or (``tag[0] =
    ()``) the length of the slot arrays."""
    NB = len(tag[0])
    return NB * LANE if NB > 0 else pwr.shape[0]


@ieee_inline_kernel
def _layers(tag, L):
    """The number of layers: ``len(tag[1])``, a compile-time constant, or (``tag[1] =
    ()``) ``L``."""
    NL = len(tag[1])
    return NL if NL > 0 else L


@ieee_inline_kernel
def bins_direction(tag, L, cplx, packed, r, Wr, Wi, Cr, Ci, GR, GI, ipr, ipi, pwr, pwi, msk, Ur, Ui, Qr, Qi, aw,
                   au, as_, a2, um2):
    """Ascent direction ``U_l = (G / pw) conj(prod_{j != l} W_j)`` and the squared
    layer magnitudes ``a2_l = max |W_l|^2``, ``um2_l = max |U_l|^2``; returns
    ``||U||^2`` (time domain, Parseval weights), for run ``r`` (its ``W, C, U`` from
    ``r L S``, ``GR, GI`` from ``r S``, ``a2, um2`` from ``r L``).

    ``C_l = prod_{j < l} W_j`` are the prefix products that the trial which made
    ``W`` left (``C_0 = 1``). One sweep down the layers: ``U_l = Q_l conj(C_l)``,
    with the suffix chain ``Q_l = (G / pw) conj(prod_{j > l} W_j)`` running in ``Qr,
    Qi`` (S). ``GR, GI`` (S per run) are the real and imaginary slots of the pass's
    ``G``; ``pwr, pwi`` (S) the Parseval weights, ``ipr, ipi`` their inverses and
    ``msk`` a 0/1 mask, zero at a packed slot 0 (redone by scalar code at the end as
    the two real bins it holds) and at padding. ``aw, au, as_`` (8) are work arrays."""
    L = _layers(tag, L)
    S = _slots(tag, pwr)
    nb = S // LANE
    oW = r * L * S
    oS = r * S
    oL = r * L
    for t in range(LANE):
        as_[t] = 0.0
    if not cplx:
        for s in range(S):
            Qr[U64(s)] = GR[U64(oS + s)] * ipr[U64(s)]
        for l in range(L - 1, -1, -1):
            o = oW + l * S
            for t in range(LANE):
                aw[t] = 0.0
                au[t] = 0.0
            for j in range(nb):
                for t in range(LANE):
                    s = j * LANE + t
                    q = Qr[U64(s)]
                    w = Wr[U64(o + s)]
                    u = q * Cr[U64(o + s)]
                    Ur[U64(o + s)] = u
                    Qr[U64(s)] = q * w
                    uu = u * u
                    ww = w * w
                    aw[t] = fmax(aw[t], ww)
                    au[t] = fmax(au[t], uu)
                    as_[t] = fma(pwr[U64(s)], uu, as_[t])
            a2[oL + l] = _lane_max(aw)
            um2[oL + l] = _lane_max(au)
        return _lane_sum(as_)
    for s in range(S):
        Qr[U64(s)] = GR[U64(oS + s)] * ipr[U64(s)]
        Qi[U64(s)] = GI[U64(oS + s)] * ipi[U64(s)]
    for l in range(L - 1, -1, -1):
        o = oW + l * S
        for t in range(LANE):
            aw[t] = 0.0
            au[t] = 0.0
        for j in range(nb):
            for t in range(LANE):
                s = j * LANE + t
                i = o + s
                xr = Qr[U64(s)]
                xi = Qi[U64(s)]
                p_r = Cr[U64(i)]
                p_i = Ci[U64(i)]
                ur = fma(xr, p_r, xi * p_i)
                ui = fma(xi, p_r, -(xr * p_i))
                Ur[U64(i)] = ur
                Ui[U64(i)] = ui
                wr = Wr[U64(i)]
                wi = Wi[U64(i)]
                Qr[U64(s)] = fma(xr, wr, xi * wi)
                Qi[U64(s)] = fma(xi, wr, -(xr * wi))
                ww = fma(wr, wr, wi * wi) * msk[U64(s)]
                um = fma(ur, ur, ui * ui) * msk[U64(s)]
                aw[t] = fmax(aw[t], ww)
                au[t] = fmax(au[t], um)
                as_[t] = fma(pwr[U64(s)], um, as_[t])
        a2[oL + l] = _lane_max(aw)
        um2[oL + l] = _lane_max(au)
    u2 = _lane_sum(as_)
    if packed:
        # slot 0: DC (real parts) and Nyquist (imaginary parts), two real bins, with
        # their own prefix products in C's slot 0 (C_0 = 1 + 1i there)
        qr = GR[U64(oS)] * ipr[0]
        qi = GI[U64(oS)] * ipi[0]
        for l in range(L - 1, -1, -1):
            i = oW + l * S
            ur = qr * Cr[U64(i)]
            ui = qi * Ci[U64(i)]
            Ur[U64(i)] = ur
            Ui[U64(i)] = ui
            wr = Wr[U64(i)]
            wi = Wi[U64(i)]
            qr *= wr
            qi *= wi
            a2[oL + l] = max(a2[oL + l], wr * wr, wi * wi)
            um2[oL + l] = max(um2[oL + l], ur * ur, ui * ui)
            u2 += pwr[0] * (ur * ur) + pwi[0] * (ui * ui)
    return u2


@ieee_inline_kernel
def bins_trial(tag, L, cplx, packed, oW, Wr, Wi, Ur, Ui, mu, tWr, tWi, Cr, Ci, bR, bI, pwr):
    """The trial point ``tW = W + mu U``, its prefix products ``C_l = prod_{j < l}
    tW_j`` for ``l >= 1`` (the direction at an accepted point reuses them; ``C_0 = 1``
    is never written) and its ``b = prod_l tW_l`` (real slots ``bR``, imaginary
    slots ``bI``), in one sweep, for the run at ``oW``."""
    L = _layers(tag, L)
    S = _slots(tag, pwr)
    for s in range(S):
        x = fma(mu, Ur[U64(oW + s)], Wr[U64(oW + s)])
        tWr[U64(oW + s)] = x
        bR[U64(s)] = x
    if not cplx:
        for l in range(1, L):
            o = oW + l * S
            for s in range(S):
                x = fma(mu, Ur[U64(o + s)], Wr[U64(o + s)])
                tWr[U64(o + s)] = x
                br = bR[U64(s)]
                Cr[U64(o + s)] = br
                bR[U64(s)] = br * x
        return
    for s in range(S):
        x = fma(mu, Ui[U64(oW + s)], Wi[U64(oW + s)])
        tWi[U64(oW + s)] = x
        bI[U64(s)] = x
    for l in range(1, L):
        o = oW + l * S
        for s in range(S):
            wr = fma(mu, Ur[U64(o + s)], Wr[U64(o + s)])
            wi = fma(mu, Ui[U64(o + s)], Wi[U64(o + s)])
            tWr[U64(o + s)] = wr
            tWi[U64(o + s)] = wi
            br = bR[U64(s)]
            bi = bI[U64(s)]
            Cr[U64(o + s)] = br
            Ci[U64(o + s)] = bi
            bR[U64(s)] = fma(br, wr, -(bi * wi))
            bI[U64(s)] = fma(br, wi, bi * wr)
    if packed:
        br = tWr[U64(oW)]
        bi = tWi[U64(oW)]
        for l in range(1, L):
            Cr[U64(oW + l * S)] = br
            Ci[U64(oW + l * S)] = bi
            br *= tWr[U64(oW + l * S)]
            bi *= tWi[U64(oW + l * S)]
        bR[0] = br
        bI[0] = bi


@kernel
def bins_layout(theta, L, K, Ki, packed, S, Wr, Wi):
    """Unpack the flat ``theta`` (``[Re W (L*K), Im W (L*Ki)]``) into slots."""
    kc = K - 1 if packed else K
    oi = L * K
    for l in range(L):
        for s in range(S):
            Wr[U64(l * S + s)] = theta[l * K + s] if s < kc else 0.0
            if Ki != 0:
                Wi[U64(l * S + s)] = theta[oi + l * K + s] if s < kc else 0.0
        if packed:
            Wi[U64(l * S)] = theta[l * K + K - 1]


@kernel
def _bins_unlayout(Wr, Wi, L, K, Ki, packed, S, theta):
    kc = K - 1 if packed else K
    oi = L * K
    for l in range(L):
        for s in range(kc):
            theta[l * K + s] = Wr[U64(l * S + s)]
            if Ki != 0:
                theta[oi + l * K + s] = Wi[U64(l * S + s)]
        if packed:
            theta[l * K + K - 1] = Wi[U64(l * S)]
            theta[oi + l * K] = 0.0
            theta[oi + l * K + K - 1] = 0.0


@ieee_inline_kernel
def bins_pass(tag, N, cplx, loss, oS, oP, ZR, ZI, ZTR, ZTI, bR, bI, GR, GI, pwr, ps, m, av, e, mA, mB, v0, v1,
              v2, v3, fwd):
    """The pass over the data at ``b``: margins ``m_n = <Z_n, b>``, an online
    softmax over blocks of ``BLOCK`` samples, and ``G = sum_n exp(a_n - Ma) Z_n``
    accumulated while the block's rows are in cache, into ``GR, GI`` from ``oS``.
    Fills ``ps`` (log-sum state, from ``oP``) like ``_gd.pass_block`` and returns
    log L.

    ``ZR, ZI`` (N S) are the data rows; ``ZTR, ZTI`` (empty, or ``ceil(N / 16)``
    blocks of (S, 16)) the same transposed, samples innermost: the margins of a
    block are then two vectors, with no horizontal sums. ``v0`` (64) and ``v1..v3``
    (8) are lane accumulators, ``m, av, e, mA, mB`` (BLOCK) work buffers.

    The blocks are taken in order (``fwd``) or in reverse: passes that alternate
    start where the last one ended, with its last block still in L1 (one block in
    eight read from L2 the fewer at conv (128,128,3), about 2 %)."""
    S = _slots(tag, pwr)
    nb = S // LANE
    Ma = -np.inf
    sa = 0.0
    Ml = -np.inf
    sl = 0.0
    mmin = np.inf
    for s in range(S):
        GR[U64(oS + s)] = 0.0
    if cplx:
        for s in range(S):
            GI[U64(oS + s)] = 0.0
    nblk = (N + BLOCK - 1) // BLOCK
    for bi in range(nblk):
        n0 = (bi if fwd else nblk - 1 - bi) * BLOCK
        nk = min(BLOCK, N - n0)
        nk4 = nk - nk % 4
        if ZTR.shape[0] != 0:
            # margins of the block's 16 samples in two vectors, slots two at a time
            o = (n0 // BLOCK) * S * BLOCK
            for u in range(BLOCK):
                mA[u] = 0.0
                mB[u] = 0.0
            for s in range(0, S, 2):
                b0 = bR[U64(s)]
                b1 = bR[U64(s + 1)]
                for u in range(BLOCK):
                    mA[u] = fma(ZTR[U64(o + s * BLOCK + u)], b0, mA[u])
                    mB[u] = fma(ZTR[U64(o + (s + 1) * BLOCK + u)], b1, mB[u])
            if cplx:
                for s in range(0, S, 2):
                    b0 = bI[U64(s)]
                    b1 = bI[U64(s + 1)]
                    for u in range(BLOCK):
                        mA[u] = fma(ZTI[U64(o + s * BLOCK + u)], b0, mA[u])
                        mB[u] = fma(ZTI[U64(o + (s + 1) * BLOCK + u)], b1, mB[u])
            for u in range(BLOCK):
                m[u] = mA[u] + mB[u]
        else:
            # eight rows at a time, eight slots per lane (v0 (64): row q's lanes at
            # 8 q), then the eight sums over the lanes at once
            nk8 = nk - nk % 8
            for i in range(0, nk8, 8):
                r0 = (n0 + i) * S
                for u in range(8 * LANE):
                    v0[u] = 0.0
                for j in range(nb):
                    for t in range(LANE):
                        s = j * LANE + t
                        br = bR[U64(s)]
                        for q in range(8):
                            v0[q * LANE + t] = fma(ZR[U64(r0 + q * S + s)], br, v0[q * LANE + t])
                if cplx:
                    for j in range(nb):
                        for t in range(LANE):
                            s = j * LANE + t
                            bi = bI[U64(s)]
                            for q in range(8):
                                v0[q * LANE + t] = fma(ZI[U64(r0 + q * S + s)], bi, v0[q * LANE + t])
                lane_sums8(v0, m, i)
            # then four rows at a time, and one
            for i in range(nk8, nk4, 4):
                r0 = (n0 + i) * S
                for t in range(LANE):
                    v0[t] = 0.0
                    v1[t] = 0.0
                    v2[t] = 0.0
                    v3[t] = 0.0
                for j in range(nb):
                    for t in range(LANE):
                        s = j * LANE + t
                        br = bR[U64(s)]
                        v0[t] = fma(ZR[U64(r0 + s)], br, v0[t])
                        v1[t] = fma(ZR[U64(r0 + S + s)], br, v1[t])
                        v2[t] = fma(ZR[U64(r0 + 2 * S + s)], br, v2[t])
                        v3[t] = fma(ZR[U64(r0 + 3 * S + s)], br, v3[t])
                if cplx:
                    for j in range(nb):
                        for t in range(LANE):
                            s = j * LANE + t
                            bi = bI[U64(s)]
                            v0[t] = fma(ZI[U64(r0 + s)], bi, v0[t])
                            v1[t] = fma(ZI[U64(r0 + S + s)], bi, v1[t])
                            v2[t] = fma(ZI[U64(r0 + 2 * S + s)], bi, v2[t])
                            v3[t] = fma(ZI[U64(r0 + 3 * S + s)], bi, v3[t])
                m[i] = _lane_sum(v0)
                m[i + 1] = _lane_sum(v1)
                m[i + 2] = _lane_sum(v2)
                m[i + 3] = _lane_sum(v3)
            for i in range(nk4, nk):
                r0 = (n0 + i) * S
                for t in range(LANE):
                    v0[t] = 0.0
                for j in range(nb):
                    for t in range(LANE):
                        s = j * LANE + t
                        v0[t] = fma(ZR[U64(r0 + s)], bR[U64(s)], v0[t])
                if cplx:
                    for j in range(nb):
                        for t in range(LANE):
                            s = j * LANE + t
                            v0[t] = fma(ZI[U64(r0 + s)], bI[U64(s)], v0[t])
                m[i] = _lane_sum(v0)
        if loss == EXP_LOSS:
            # a_n = -m_n; the block's lanes past its nk samples get a_n = -inf
            # (weight zero). Sixteen-wide loops of constant length: every array
            # read here as a vector was written as one (a wide load of narrow
            # stores misses the store-to-load forwarding and stalls).
            for u in range(BLOCK):
                x = m[u]
                inb = u < nk
                av[u] = -x if inb else -np.inf
                mA[u] = x if inb else np.inf
            bmax = _max16(av)
            bmin = _min16(mA)
            mmin = bmin if bmin < mmin else mmin
        else:
            bmax = -np.inf
            for i in range(nk):
                if m[i] < mmin:
                    mmin = m[i]
                av[i], Ml, sl = logistic_weight(m[i], Ml, sl)
                if av[i] > bmax:
                    bmax = av[i]
        if bmax > Ma:
            # rescale what the earlier blocks summed (never at the first block)
            if Ma - bmax > LOG_TINY:
                rs = np.exp(Ma - bmax)
                sa *= rs
                for s in range(S):
                    GR[U64(oS + s)] = GR[U64(oS + s)] * rs
                if cplx:
                    for s in range(S):
                        GI[U64(oS + s)] = GI[U64(oS + s)] * rs
            else:
                sa = 0.0
                for s in range(S):
                    GR[U64(oS + s)] = 0.0
                if cplx:
                    for s in range(S):
                        GI[U64(oS + s)] = 0.0
            Ma = bmax
        if loss == EXP_LOSS:
            for u in range(BLOCK):
                m[u] = av[u] - Ma
            for u in range(BLOCK):
                e[u] = exp_nonpos(m[u])
            sa += _sum16(e)
        else:
            for i in range(nk):
                m[i] = av[i] - Ma
            exp_block(m, e, nk)
            for i in range(nk):
                sa += e[i]
        if nk == BLOCK and ZTR.shape[0] == 0:
            # long rows: G += sum_i e_i Z_i over the block's sixteen rows, each slot's
            # sum in registers, G loaded and stored once per block; a block of zero
            # weights is skipped
            if _max16(e) > 0.0:
                r0 = n0 * S
                ev = (e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7],
                      e[8], e[9], e[10], e[11], e[12], e[13], e[14], e[15])
                # the next block's rows (none after the last: the next pass starts here)
                rn = (n0 + BLOCK if n0 + BLOCK < N else n0) if fwd else (n0 - BLOCK if n0 > 0 else 0)
                rn *= S
                _block_gradient(tag, ZR, GR, oS, r0, rn, S, ev)
                if cplx:
                    _block_gradient(tag, ZI, GI, oS, r0, rn, S, ev)
            continue
        # G += sum_i e_i Z_i, four rows at a time; rows of zero weight are skipped
        for i in range(0, nk4, 4):
            r0 = (n0 + i) * S
            e0 = e[i]
            e1 = e[i + 1]
            e2 = e[i + 2]
            e3 = e[i + 3]
            if e0 == 0.0 and e1 == 0.0 and e2 == 0.0 and e3 == 0.0:
                continue
            for s in range(S):
                GR[U64(oS + s)] += (fma(e0, ZR[U64(r0 + s)], e1 * ZR[U64(r0 + S + s)])
                              + fma(e2, ZR[U64(r0 + 2 * S + s)], e3 * ZR[U64(r0 + 3 * S + s)]))
            if cplx:
                for s in range(S):
                    GI[U64(oS + s)] += (fma(e0, ZI[U64(r0 + s)], e1 * ZI[U64(r0 + S + s)])
                                  + fma(e2, ZI[U64(r0 + 2 * S + s)], e3 * ZI[U64(r0 + 3 * S + s)]))
        for i in range(nk4, nk):
            r0 = (n0 + i) * S
            ei = e[i]
            if ei != 0.0:
                for s in range(S):
                    GR[U64(oS + s)] = fma(ei, ZR[U64(r0 + s)], GR[U64(oS + s)])
                if cplx:
                    for s in range(S):
                        GI[U64(oS + s)] = fma(ei, ZI[U64(r0 + s)], GI[U64(oS + s)])
    ps[oP + PS_MA] = Ma
    ps[oP + PS_SA] = sa
    ps[oP + PS_ML] = Ml
    ps[oP + PS_SL] = sl
    ps[oP + PS_MMIN] = mmin
    if loss == EXP_LOSS:
        return Ma + np.log(sa)
    return Ml + np.log(sl)


@ieee_inline_kernel
def _smoothness(a, oL, L, X2, Xh, iv):
    """``_gd.smoothness`` of the layer magnitudes ``a[oL:oL + L]``, with one division
    per layer (``iv`` (L) holds 1 / a_l)."""
    P = 1.0
    T = 0.0
    for j in range(L):
        aj = a[oL + j]
        if not aj > 0.0:
            return smoothness(a[oL:oL + L], X2, Xh)
        iv[j] = 1.0 / aj
        P *= aj
        T += iv[j]
    g = 0.0
    hmax = 0.0
    for l in range(L):
        q = P * iv[l]
        g += q * q
        hs = q * (T - iv[l])
        hmax = hs if hs > hmax else hmax
    return X2 * g + Xh * hmax, np.sqrt(X2 * g)


@ieee_inline_kernel
def _certified(mult, lr, Sb, Gb, su):
    """``_gd.segment_certified`` without divisions: ``eta L(w) = mult lr`` and
    ``|dw| = mult su``; for ``x = Gm |dw| < 1/2`` the condition ``eta L S / (1 - x) <
    CERT`` is ``eta L S < CERT (1 - x)``."""
    x = Gb * mult * su
    if x < 0.5:
        return mult * lr * Sb < CERT * (1.0 - x)
    return mult * lr * Sb * np.exp(x) < CERT


@noalias_kernel
def _bins_loop(tag, R, L, N, Wr, Wi, tWr, tWi, Ur, Ui, Cr, Ci, Qr, Qi, bR, bI, GR, GI,
               GnR, GnI, ZR, ZI, ZTR, ZTI, ipr, ipi, pwr, pwi, msk, aw, au, as_, a2, um2, a, um, ab, ps, m, av, e,
               mA, mB, v0, v1, v2, v3, iv, logL, mult, tries, halv, status, done, need, lr, su, Ma, sa, mmin,
               log_eta, X2, Xh, loss, adaptive, step, steps, gpar):
    """The GD loop of ``gd_bins`` for ``R`` runs on one dataset: every array a
    distinct argument (``noalias``), the phases inlined. Per run: the state
    ``W, tW, U, C`` (L S each), ``G, Gn`` (S), ``a2, um2, a, um, ab`` (L), ``ps`` (N_PS)
    and the scalars ``logL, mult, ..., log_eta``; the rest is work space that one
    run's phase uses at a time. Each sweep gives every unfinished run one attempt
    (a step, or a refused trial): the runs are independent, so the processor
    overlaps one run's dependency chain (pass, direction, step size, trial) with
    the next run's. A run's arithmetic does not depend on ``R`` or on the other
    runs: its bits are those of the run alone. The accepted trial point and its
    ``G`` are copied (an argument cannot be swapped for another without losing
    ``noalias``). ``done[r]`` starts at -1: the pass at the starting point goes
    through the same code as a step. ``gpar[r]``: the parity of the steps run ``r``
    did before the call; the pass at the point after its step ``k`` (counted from
    its start) goes through the data in order where ``k`` is even."""
    L = _layers(tag, L)
    S = _slots(tag, pwr)
    LS = L * S
    cplx = len(tag[2]) > 0  # compile-time constants: the branches on them fold away
    packed = len(tag[2]) == 2
    busy = True
    while busy:
        busy = False
        for r in range(R):
            if status[r] != RUNNING or done[r] >= steps:
                continue
            busy = True
            oW = r * LS
            oS = r * S
            oL = r * L
            oP = r * N_PS
            if done[r] >= 0:
                if need[r]:
                    u2 = bins_direction(tag, L, cplx, packed, r, Wr, Wi, Cr, Ci, GR, GI, ipr, ipi, pwr, pwi, msk,
                                        Ur, Ui, Qr, Qi, aw, au, as_, a2, um2)
                    for l in range(L):
                        a[oL + l] = np.sqrt(a2[oL + l])
                        um[oL + l] = np.sqrt(um2[oL + l])
                    if adaptive:
                        Sw, _ = _smoothness(a, oL, L, X2, Xh, iv)
                        if u2 == 0.0 or Sw == 0.0:
                            status[r] = STATIONARY  # zero gradient: GD stays here forever
                            continue
                        # eta = c / (L S): mult = eta exp(Ma) = c / (lr S), lr = L exp(-Ma)
                        lr[r] = sa[r] if loss == EXP_LOSS else np.exp(logL[r] - Ma[r])
                        mult[r] = step[r] / (lr[r] * Sw)
                        su[r] = np.sqrt(u2)
                    else:
                        mult[r], _ = step_multiplier(adaptive, loss, step[r], sa[r], Ma[r], logL[r], 1.0)
                    need[r] = False
                    tries[r] = 0
                if adaptive:
                    # certify on the segment, halving until the descent lemma holds there
                    while True:
                        for l in range(L):
                            ab[oL + l] = a[oL + l] + mult[r] * um[oL + l]
                        Sb, Gb = _smoothness(ab, oL, L, X2, Xh, iv)
                        if _certified(mult[r], lr[r], Sb, Gb, su[r]):
                            break
                        mult[r] *= 0.5
                        halv[r] += 1
            bins_trial(tag, L, cplx, packed, oW, Wr, Wi, Ur, Ui, mult[r], tWr, tWi, Cr, Ci, bR, bI, pwr)
            logLn = bins_pass(tag, N, cplx, loss, oS, oP, ZR, ZI, ZTR, ZTI, bR, bI, GnR, GnI, pwr, ps, m, av, e,
                              mA, mB, v0, v1, v2, v3, (gpar[r] + done[r] + 1) % 2 == 0)
            if done[r] >= 0:
                if guard_refuses(r, adaptive, logLn, logL, tries, halv, mult, status):
                    continue
                if done[r] == steps - 1:
                    log_eta[r] = (np.log(mult[r]) if mult[r] > 0.0 else -np.inf) - Ma[r]
            # accept (at the start: W + 0 U = W)
            for i in range(LS):
                Wr[U64(oW + i)] = tWr[U64(oW + i)]
            for s in range(S):
                GR[U64(oS + s)] = GnR[U64(oS + s)]
            if cplx:
                for i in range(LS):
                    Wi[U64(oW + i)] = tWi[U64(oW + i)]
                for s in range(S):
                    GI[U64(oS + s)] = GnI[U64(oS + s)]
            logL[r] = logLn
            Ma[r] = ps[oP + PS_MA]
            sa[r] = ps[oP + PS_SA]
            mmin[r] = ps[oP + PS_MMIN]
            done[r] += 1
            need[r] = True
            if not logLn - logLn == 0.0:  # not finite (strict IEEE here: not folded)
                status[r] = NONFINITE


@kernel
def _empty64(n):
    """An uninitialized float64 array of ``n`` elements starting on a 64-byte boundary."""
    buf = np.empty(n + LANE)
    off = (-buf.ctypes.data) % 64 // 8
    return buf[off:off + n]


def gd_bins(tag, thetas, L, K, Ki, packed, ZR, ZI, ZTR, ZTI, pwr, pwi, ipr, ipi, msk, X2, Xh, loss, adaptive, step,
            steps, stats):
    """``steps`` iterations of GD for ``R`` diag/conv runs on one dataset
    (``thetas`` (R, P) updated in place, ``step`` (R,) their step sizes, ``stats``
    (R, N_STATS) as in ``gd_group``), with the data, the weights and the tag of
    ``bins_data``. Runs not RUNNING are left alone. A run's bits do not depend on
    ``R`` nor on the other runs. On entry ``stats[r, ST_STEPS]`` holds the steps
    the run has done before (its passes over the data alternate in direction with
    the step count: a run continued with its count gets the bits of one that never
    stopped); on return, the steps of this call.

    A Python function, as is ``gd_bins_history``: with both compiled around the
    compiled ``_bins_drive``, Numba compiled the loop one level deeper and took
    twice as long to (40-60 s from an empty cache, not 20)."""
    points = np.array([steps], dtype=np.int64)
    _bins_drive(tag, thetas, L, K, Ki, packed, ZR, ZI, ZTR, ZTI, pwr, pwi, ipr, ipi, msk, X2, Xh, loss, adaptive,
                step, points, stats, pwr, pwr, np.empty((0, 0)), np.empty((0, 0)))


# the columns of a row of ``gd_bins_history``
ROW_STEPS, ROW_LOG_LOSS, ROW_MIN_MARGIN, ROW_LOG_ETA, ROW_HALVINGS, ROW_STATUS, ROW_MEASURES = range(7)


def gd_bins_history(tag, theta, L, K, Ki, packed, ZR, ZI, ZTR, ZTI, pwr, pwi, ipr, ipi, msk, X2, Xh, loss,
                    adaptive, step, points, stats, pw, pweights, refs, rows):
    """One run of ``gd_bins`` (``theta`` (P,), ``stats`` (N_STATS,), ``ST_STEPS`` as
    there) taken to each of
    ``points`` (steps from the call's start, non-decreasing; 0 evaluates the starting
    point) in one call, with what a history row needs at each: ``rows[k]`` holds the
    steps done, log L, the min margin, log eta of the last step, the halvings so far
    (this call), the status and, from ``ROW_MEASURES``, ``_gd.prod_row_measures``
    (``pw, pweights, refs`` as there). The loop continues across the points exactly
    as one loop (the same bits as one ``gd_bins`` call of ``points[-1]`` steps).
    Stops at the first point at which the run is no longer RUNNING (that row
    recorded, with the step it stopped at) and returns the number of rows."""
    if rows.shape[0] != points.shape[0] or rows.shape[1] != ROW_MEASURES + 2 + refs.shape[0]:
        raise ValueError("gd_bins_history takes one row per point, of the history columns and one per reference")
    stp = np.array([step], dtype=np.float64)
    return _bins_drive(tag, theta.reshape(1, theta.shape[0]), L, K, Ki, packed, ZR, ZI, ZTR, ZTI, pwr, pwi, ipr,
                       ipi, msk, X2, Xh, loss, adaptive, stp, points, stats.reshape(1, stats.shape[0]), pw,
                       pweights, refs, rows)


@kernel
def _bins_drive(tag, thetas, L, K, Ki, packed, ZR, ZI, ZTR, ZTI, pwr, pwi, ipr, ipi, msk, X2, Xh, loss, adaptive,
                step, points, stats, pw, pweights, refs, rows):
    """The body of ``gd_bins`` (``rows`` empty: to ``points[-1]`` steps) and of
    ``gd_bins_history`` (one run, a row at each point)."""
    R = thetas.shape[0]
    if step.shape[0] != R or stats.shape[0] != R:
        raise ValueError("gd_bins takes one step size and one stats row per run")
    S = pwr.shape[0]
    N = ZR.shape[0] // S
    # every work array starts on a cache line (64 bytes: one 512-bit vector), so no
    # vector load or store straddles two lines (Numba aligns to 32)
    LS = L * S
    Wr, Wi, tWr, tWi = _empty64(R * LS), _empty64(R * LS), _empty64(R * LS), _empty64(R * LS)
    Ur, Ui = _empty64(R * LS), _empty64(R * LS)
    Cr, Ci = _empty64(R * LS), _empty64(R * LS)  # each run's prefix products, left by its trials
    Ur[:] = 0.0
    Ui[:] = 0.0
    Wi[:] = 0.0
    Cr[:] = 0.0
    Ci[:] = 0.0
    for r in range(R):
        Cr[r * LS:r * LS + S] = 1.0  # C_0 = 1 (slot 0 packed: 1 + 1i, two real bins)
        if packed:
            Ci[r * LS] = 1.0
    Qr, Qi = _empty64(S), _empty64(S)
    bR, bI = _empty64(S), _empty64(S)
    GR, GI, GnR, GnI = _empty64(R * S), _empty64(R * S), _empty64(R * S), _empty64(R * S)
    aw, au, as_, v0, v1, v2, v3 = (_empty64(LANE), _empty64(LANE), _empty64(LANE), _empty64(8 * LANE),
                                   _empty64(LANE), _empty64(LANE), _empty64(LANE))
    m, av, e, mA, mB = _empty64(BLOCK), _empty64(BLOCK), _empty64(BLOCK), _empty64(BLOCK), _empty64(BLOCK)
    a2, um2, a, um, ab = np.empty(R * L), np.empty(R * L), np.empty(R * L), np.empty(R * L), np.empty(R * L)
    iv = np.empty(L)
    ps = np.empty(R * N_PS)
    logL, mult, lr, su = np.empty(R), np.zeros(R), np.ones(R), np.zeros(R)
    Ma, sa, mmin, log_eta = np.zeros(R), np.zeros(R), np.full(R, np.inf), np.empty(R)
    tries, halv = np.zeros(R, np.int64), np.zeros(R, np.int64)
    status, done = np.empty(R, np.int64), np.full(R, -1, np.int64)
    need = np.ones(R, np.bool_)
    gpar = np.empty(R, np.int64)
    for r in range(R):
        gpar[r] = np.int64(stats[r, ST_STEPS]) % 2
        status[r] = np.int64(stats[r, ST_STATUS])
        log_eta[r] = stats[r, ST_LOG_ETA]
        bins_layout(thetas[r], L, K, Ki, packed, S, Wr[r * LS:(r + 1) * LS], Wi[r * LS:(r + 1) * LS])
    nrows = 0
    for k in range(points.shape[0]):
        _bins_loop(tag, R, L, N, Wr, Wi, tWr, tWi, Ur, Ui, Cr, Ci, Qr, Qi, bR, bI, GR, GI,
                   GnR, GnI, ZR, ZI, ZTR, ZTI, ipr, ipi, pwr, pwi, msk, aw, au, as_, a2, um2, a, um, ab, ps, m, av,
                   e, mA, mB, v0, v1, v2, v3, iv, logL, mult, tries, halv, status, done, need, lr, su, Ma, sa, mmin,
                   log_eta, X2, Xh, loss, adaptive, step, points[k], gpar)
        if rows.shape[0] == 0:
            continue
        if stats[0, ST_STATUS] != RUNNING:
            break  # left alone
        row = rows[k]
        row[ROW_STEPS] = max(done[0], 0)
        row[ROW_LOG_LOSS] = logL[0]
        row[ROW_MIN_MARGIN] = mmin[0]
        row[ROW_LOG_ETA] = log_eta[0]
        row[ROW_HALVINGS] = halv[0]
        row[ROW_STATUS] = status[0]
        th = np.empty(thetas.shape[1])
        _bins_unlayout(Wr[:LS], Wi[:LS], L, K, Ki, packed, S, th)
        out = np.empty(rows.shape[1] - ROW_MEASURES)
        prod_row_measures(th, L, K, Ki, pw, pweights, refs, out)
        row[ROW_MEASURES:] = out
        nrows += 1
        if status[0] != RUNNING:
            break
    for r in range(R):
        if stats[r, ST_STATUS] != RUNNING:
            continue
        _bins_unlayout(Wr[r * LS:(r + 1) * LS], Wi[r * LS:(r + 1) * LS], L, K, Ki, packed, S, thetas[r])
        stats[r, ST_LOG_LOSS] = logL[r]
        stats[r, ST_MIN_MARGIN] = mmin[r]
        stats[r, ST_LOG_ETA] = log_eta[r]
        stats[r, ST_HALVINGS] += halv[r]
        stats[r, ST_STEPS] = max(done[r], 0)
        stats[r, ST_STATUS] = status[r]
    return nrows


def aligned(a):
    """A flat copy of ``a`` whose data start on a 64-byte boundary."""
    a = np.ascontiguousarray(a, dtype=np.float64).ravel()
    buf = np.empty(a.size + LANE)
    off = (-buf.ctypes.data) % 64 // 8
    out = buf[off:off + a.size]
    out[...] = a
    return out


def bins_data(Z, pw, K, Ki, packed, L):
    """The data and weights of a PROD problem of depth ``L`` in the slot layout of
    ``gd_bins``: ``(tag, ZR, ZI, ZTR, ZTI, pwr, pwi, ipr, ipi, msk)`` from ``Z`` (N, K
    + Ki) and ``pw`` (K,); every array flat and 64-byte aligned."""
    N = Z.shape[0]
    kc = K - 1 if packed else K
    nb = max(1, -(-kc // LANE))
    if nb <= STATIC_MAX_BLOCKS:
        nb = 1 << (nb - 1).bit_length()  # 1, 2, 4 or 8: one compiled loop each
        blocks = (0,) * nb
    else:
        blocks = ()
    layers = (0,) * L if nb <= STATIC_LAYERS_MAX_BLOCKS and L <= STATIC_MAX_LAYERS else ()
    tag = (blocks, layers, (0,) * (2 if packed else 1 if Ki != 0 else 0))
    S = nb * LANE
    cplx = Ki != 0
    Zb = np.zeros((N, 2 * S))
    Zb[:, :kc] = Z[:, :kc]
    pwr = np.zeros(S)
    pwi = np.zeros(S)
    ipr = np.zeros(S)
    ipi = np.zeros(S)
    msk = np.zeros(S)
    pwr[:kc] = pw[:kc]
    ipr[:kc] = 1.0 / pw[:kc]
    msk[:kc] = 1.0
    if cplx:
        Zb[:, S:S + kc] = Z[:, K:K + kc]
        pwi[:kc] = pw[:kc]
        ipi[:kc] = 1.0 / pw[:kc]
        if packed:
            Zb[:, S] = Z[:, K - 1]
            pwi[0] = pw[K - 1]
            ipi[0] = 1.0 / pw[K - 1]
            msk[0] = 0.0
    ZR = Zb[:, :S]
    ZI = Zb[:, S:] if cplx else np.zeros((0, S))
    # small problems also get Z transposed, samples innermost in blocks of BLOCK
    # (zero-padded): the margins of a block are then vectors, with no horizontal sums
    nq = -(-N // BLOCK) if nb <= TRANSPOSED_MAX_BLOCKS else 0
    Zp = np.zeros((nq * BLOCK, 2 * S))
    Zp[:N if nq else 0] = Zb[:N if nq else 0]
    ZT = Zp.reshape(nq, BLOCK, 2, S).transpose(0, 2, 3, 1)  # (block, part, slot, sample)
    ZTR = ZT[:, 0]
    ZTI = ZT[:, 1] if cplx else np.zeros((0, S, BLOCK))
    return (tag,) + tuple(aligned(x) for x in (ZR, ZI, ZTR, ZTI, pwr, pwi, ipr, ipi, msk))
