"""Gradient descent on one diagonal or convolutional net, spectral bins in SIMD lanes.

``gd_bins`` does for a single run what ``_gd.gd_group`` does (same iteration,
certified step, guard, statuses and stats), with the state laid out for the
vector units: the bins of each layer in blocks of ``LANE`` = 8, ``W[l, j, t]``
for bin slot ``8 j + t``, and every elementwise loop written as a loop over the
blocks around a loop of constant length 8, which LLVM turns into one 512-bit (or
two 256-bit) operation. Blocks are zero-padded: a zero bin has a zero gradient,
adds zero to every margin and sum, and stays zero.

Real spectra of even length have two real bins, DC and Nyquist; they share slot
0 (DC in the real part, Nyquist in the imaginary part, the usual packing of a
real FFT), so that a spectrum of ``D`` points takes ``ceil(D / 2)`` complex slots
(16 for ``D = 32``: two blocks, no tail). The vector loops treat slot 0 as a
complex number like the others, with its contribution to the layer maxima and to
``||U||^2`` masked out; a scalar fix-up then redoes slot 0 as the two real bins it
holds.

The phases are separate ``noalias`` kernels (every array an argument that no
other overlaps; callers pass distinct arrays), compiled with ``FASTMATH``. The
order of operations differs from ``gd_group`` (blocked sums), so the two agree to
rounding, not bitwise; a run's bits are fixed by its inputs.
"""

import numpy as np

from ._config import ieee_inline_kernel, kernel, noalias_kernel
from ._gd import (
    BLOCK, EXP_LOSS, LOG_TINY, N_PS, NONFINITE, PS_MA, PS_ML, PS_MMIN, PS_SA, PS_SL, RUNNING, STATIONARY,
    ST_HALVINGS, ST_LOG_ETA, ST_LOG_LOSS, ST_MIN_MARGIN, ST_STATUS, ST_STEPS,
    _log_softplus, _softplus, exp_block, guard_refuses, is_finite, segment_certified, smoothness,
    step_multiplier,
)

from ._lanes import fma

LANE = 8
assert BLOCK == 16  # the pass's sixteen-wide loops
TRANSPOSED_MAX_BLOCKS = 4  # slot blocks up to which the margins use Z transposed

__all__ = ["LANE", "bins_layout", "gd_bins"]


@ieee_inline_kernel
def _lane_max(v):
    m = v[0]
    for t in range(1, LANE):
        m = v[t] if v[t] > m else m
    return m


@ieee_inline_kernel
def _lane_sum(v):
    """Sum of the eight lanes of ``v``, as a tree (the same order every time)."""
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))


@ieee_inline_kernel
def _mx(a, b):
    return a if a > b else b


@ieee_inline_kernel
def _mn(a, b):
    return a if a < b else b


@ieee_inline_kernel
def _max16(v):
    """max of ``v[:16]`` as a tree (NaN entries skipped)."""
    a = _mx(_mx(_mx(v[0], v[8]), _mx(v[4], v[12])), _mx(_mx(v[2], v[10]), _mx(v[6], v[14])))
    b = _mx(_mx(_mx(v[1], v[9]), _mx(v[5], v[13])), _mx(_mx(v[3], v[11]), _mx(v[7], v[15])))
    return _mx(a, b)


@ieee_inline_kernel
def _min16(v):
    """min of ``v[:16]`` as a tree (NaN entries skipped)."""
    a = _mn(_mn(_mn(v[0], v[8]), _mn(v[4], v[12])), _mn(_mn(v[2], v[10]), _mn(v[6], v[14])))
    b = _mn(_mn(_mn(v[1], v[9]), _mn(v[5], v[13])), _mn(_mn(v[3], v[11]), _mn(v[7], v[15])))
    return _mn(a, b)


@ieee_inline_kernel
def _sum16(v):
    """sum of ``v[:16]`` as a tree (the same order every time)."""
    a = ((v[0] + v[8]) + (v[4] + v[12])) + ((v[2] + v[10]) + (v[6] + v[14]))
    b = ((v[1] + v[9]) + (v[5] + v[13])) + ((v[3] + v[11]) + (v[7] + v[15]))
    return a + b


@ieee_inline_kernel
def bins_direction(Wr, Wi, GR, GI, ipr, ipi, pwr, pwi, msk, Ur, Ui, Cr, Ci, Qr, Qi, Pr, Pi, aw, au, as_, a2, um2,
                   packed):
    """Ascent direction ``U_l = (G / pw) conj(prod_{j != l} W_j)`` and the squared
    layer magnitudes ``a2_l = max |W_l|^2``, ``um2_l = max |U_l|^2``; returns
    ``||U||^2`` (time domain, Parseval weights).

    ``GR, GI`` (nb, 8) are the real and imaginary slots of the pass's ``G``;
    ``pwr, pwi`` (nb, 8) the Parseval weights, ``ipr, ipi`` their inverses and
    ``msk`` a 0/1 mask, zero at a packed slot 0 (redone by scalar code at the end
    as the two real bins it holds) and at padding. ``Cr, Ci`` (L, nb, 8), ``Qr, Qi,
    Pr, Pi`` (nb, 8), ``aw, au, as_`` (8) are work arrays.

    No loop reads one row of an array and writes another row of the same array
    (LLVM could not tell them apart and would not vectorize): the suffix products
    run in ``Q`` and are stored into ``C``."""
    L, nb = Wr.shape[0], Wr.shape[1]
    for t in range(LANE):
        as_[t] = 0.0
    if Wi.shape[0] == 0 or Wi.shape[1] == 0:
        for j in range(nb):
            for t in range(LANE):
                Qr[j, t] = 1.0
                Pr[j, t] = 1.0
        for l in range(L - 1, 0, -1):
            for j in range(nb):
                for t in range(LANE):
                    q = Qr[j, t]
                    Cr[l, j, t] = q
                    Qr[j, t] = q * Wr[l, j, t]
        for j in range(nb):
            for t in range(LANE):
                Cr[0, j, t] = Qr[j, t]
        for l in range(L):
            for t in range(LANE):
                aw[t] = 0.0
                au[t] = 0.0
            for j in range(nb):
                for t in range(LANE):
                    w = Wr[l, j, t]
                    u = (GR[j, t] * ipr[j, t]) * (Cr[l, j, t] * Pr[j, t])
                    Ur[l, j, t] = u
                    Pr[j, t] *= w
                    uu = u * u
                    ww = w * w
                    aw[t] = ww if ww > aw[t] else aw[t]
                    au[t] = uu if uu > au[t] else au[t]
                    as_[t] = fma(pwr[j, t], uu, as_[t])
            a2[l] = _lane_max(aw)
            um2[l] = _lane_max(au)
        return _lane_sum(as_)
    for j in range(nb):
        for t in range(LANE):
            Qr[j, t] = 1.0
            Qi[j, t] = 0.0
            Pr[j, t] = 1.0
            Pi[j, t] = 0.0
    for l in range(L - 1, 0, -1):
        for j in range(nb):
            for t in range(LANE):
                qr = Qr[j, t]
                qi = Qi[j, t]
                Cr[l, j, t] = qr
                Ci[l, j, t] = qi
                wr = Wr[l, j, t]
                wi = Wi[l, j, t]
                Qr[j, t] = fma(qr, wr, -(qi * wi))
                Qi[j, t] = fma(qr, wi, qi * wr)
    for j in range(nb):
        for t in range(LANE):
            Cr[0, j, t] = Qr[j, t]
            Ci[0, j, t] = Qi[j, t]
    for l in range(L):
        for t in range(LANE):
            aw[t] = 0.0
            au[t] = 0.0
        for j in range(nb):
            for t in range(LANE):
                gr = GR[j, t] * ipr[j, t]
                gi = GI[j, t] * ipi[j, t]
                p_r = Pr[j, t]
                p_i = Pi[j, t]
                sr = Cr[l, j, t]
                si = Ci[l, j, t]
                cr = fma(sr, p_r, -(si * p_i))
                cc = fma(sr, p_i, si * p_r)
                ur = fma(gr, cr, gi * cc)
                ui = fma(gi, cr, -(gr * cc))
                Ur[l, j, t] = ur
                Ui[l, j, t] = ui
                wr = Wr[l, j, t]
                wi = Wi[l, j, t]
                Pr[j, t] = fma(p_r, wr, -(p_i * wi))
                Pi[j, t] = fma(p_r, wi, p_i * wr)
                ww = fma(wr, wr, wi * wi) * msk[j, t]
                um = fma(ur, ur, ui * ui) * msk[j, t]
                aw[t] = ww if ww > aw[t] else aw[t]
                au[t] = um if um > au[t] else au[t]
                as_[t] = fma(pwr[j, t], um, as_[t])
        a2[l] = _lane_max(aw)
        um2[l] = _lane_max(au)
    u2 = _lane_sum(as_)
    if packed:
        # slot 0: DC (real parts) and Nyquist (imaginary parts), two real bins
        gr = GR[0, 0] * ipr[0, 0]
        gi = GI[0, 0] * ipi[0, 0]
        for l in range(L):
            cr = 1.0
            ci = 1.0
            for j in range(L):
                if j != l:
                    cr *= Wr[j, 0, 0]
                    ci *= Wi[j, 0, 0]
            ur = gr * cr
            ui = gi * ci
            Ur[l, 0, 0] = ur
            Ui[l, 0, 0] = ui
            wr = Wr[l, 0, 0]
            wi = Wi[l, 0, 0]
            a2[l] = max(a2[l], wr * wr, wi * wi)
            um2[l] = max(um2[l], ur * ur, ui * ui)
            u2 += pwr[0, 0] * (ur * ur) + pwi[0, 0] * (ui * ui)
    return u2


@ieee_inline_kernel
def bins_trial(Wr, Wi, Ur, Ui, mu, tWr, tWi, bR, bI, packed):
    """The trial point ``W + mu U`` (into ``tW``) and its ``b = prod_l W_l`` (real
    slots ``bR``, imaginary slots ``bI``, (nb, 8)), in one sweep."""
    L, nb = Wr.shape[0], Wr.shape[1]
    for j in range(nb):
        for t in range(LANE):
            x = fma(mu, Ur[0, j, t], Wr[0, j, t])
            tWr[0, j, t] = x
            bR[j, t] = x
    if Wi.shape[0] == 0 or Wi.shape[1] == 0:
        for l in range(1, L):
            for j in range(nb):
                for t in range(LANE):
                    x = fma(mu, Ur[l, j, t], Wr[l, j, t])
                    tWr[l, j, t] = x
                    bR[j, t] *= x
        return
    for j in range(nb):
        for t in range(LANE):
            x = fma(mu, Ui[0, j, t], Wi[0, j, t])
            tWi[0, j, t] = x
            bI[j, t] = x
    for l in range(1, L):
        for j in range(nb):
            for t in range(LANE):
                wr = fma(mu, Ur[l, j, t], Wr[l, j, t])
                wi = fma(mu, Ui[l, j, t], Wi[l, j, t])
                tWr[l, j, t] = wr
                tWi[l, j, t] = wi
                br = bR[j, t]
                bi = bI[j, t]
                bR[j, t] = fma(br, wr, -(bi * wi))
                bI[j, t] = fma(br, wi, bi * wr)
    if packed:
        br = tWr[0, 0, 0]
        bi = tWi[0, 0, 0]
        for l in range(1, L):
            br *= tWr[l, 0, 0]
            bi *= tWi[l, 0, 0]
        bR[0, 0] = br
        bI[0, 0] = bi


@kernel
def bins_layout(theta, L, K, Ki, packed, nb, Wr, Wi):
    """Unpack the flat ``theta`` (``[Re W (L*K), Im W (L*Ki)]``) into blocks."""
    kc = K - 1 if packed else K
    oi = L * K
    for l in range(L):
        for j in range(nb):
            for t in range(LANE):
                s = LANE * j + t
                Wr[l, j, t] = theta[l * K + s] if s < kc else 0.0
                if Ki != 0:
                    Wi[l, j, t] = theta[oi + l * K + s] if s < kc else 0.0
        if packed:
            Wi[l, 0, 0] = theta[l * K + K - 1]


@kernel
def _bins_unlayout(Wr, Wi, L, K, Ki, packed, theta):
    kc = K - 1 if packed else K
    oi = L * K
    for l in range(L):
        for s in range(kc):
            theta[l * K + s] = Wr[l, s // LANE, s % LANE]
            if Ki != 0:
                theta[oi + l * K + s] = Wi[l, s // LANE, s % LANE]
        if packed:
            theta[l * K + K - 1] = Wi[l, 0, 0]
            theta[oi + l * K] = 0.0
            theta[oi + l * K + K - 1] = 0.0


@ieee_inline_kernel
def bins_pass(ZR, ZI, ZTR, ZTI, bR, bI, loss, GR, GI, ps, m, av, e, mA, mB, v0, v1, v2, v3):
    """The pass over the data at ``b``: margins ``m_n = <Z_n, b>`` (four rows at a
    time, eight slots per lane), an online softmax over blocks of ``BLOCK``
    samples, and ``G = sum_n exp(a_n - Ma) Z_n`` accumulated while the block's
    rows are in cache. Fills ``ps`` (log-sum state) like ``_gd.pass_block``;
    ``v0..v3`` (8) are lane accumulators, ``m, av, e`` (BLOCK) work buffers."""
    N, nb = ZR.shape[0], ZR.shape[1]
    cplx = ZI.shape[1] != 0
    Ma = -np.inf
    sa = 0.0
    Ml = -np.inf
    sl = 0.0
    mmin = np.inf
    for j in range(nb):
        for t in range(LANE):
            GR[j, t] = 0.0
    if cplx:
        for j in range(nb):
            for t in range(LANE):
                GI[j, t] = 0.0
    for n0 in range(0, N, BLOCK):
        nk = min(BLOCK, N - n0)
        nk4 = nk - nk % 4
        if ZTR.shape[0] != 0:
            # margins of the block's 16 samples in two vectors (samples in lanes,
            # Z transposed: no horizontal sums), slots two at a time
            q = n0 // BLOCK
            for u in range(BLOCK):
                mA[u] = 0.0
                mB[u] = 0.0
            for j in range(nb):
                for t in range(0, LANE, 2):
                    b0 = bR[j, t]
                    b1 = bR[j, t + 1]
                    for u in range(BLOCK):
                        mA[u] = fma(ZTR[q, j, t, u], b0, mA[u])
                        mB[u] = fma(ZTR[q, j, t + 1, u], b1, mB[u])
            if cplx:
                for j in range(nb):
                    for t in range(0, LANE, 2):
                        b0 = bI[j, t]
                        b1 = bI[j, t + 1]
                        for u in range(BLOCK):
                            mA[u] = fma(ZTI[q, j, t, u], b0, mA[u])
                            mB[u] = fma(ZTI[q, j, t + 1, u], b1, mB[u])
            for u in range(BLOCK):
                m[u] = mA[u] + mB[u]
        else:
            for i in range(0, nk4, 4):
                n = n0 + i
                for t in range(LANE):
                    v0[t] = 0.0
                    v1[t] = 0.0
                    v2[t] = 0.0
                    v3[t] = 0.0
                for j in range(nb):
                    for t in range(LANE):
                        br = bR[j, t]
                        v0[t] = fma(ZR[n, j, t], br, v0[t])
                        v1[t] = fma(ZR[n + 1, j, t], br, v1[t])
                        v2[t] = fma(ZR[n + 2, j, t], br, v2[t])
                        v3[t] = fma(ZR[n + 3, j, t], br, v3[t])
                if cplx:
                    for j in range(nb):
                        for t in range(LANE):
                            bi = bI[j, t]
                            v0[t] = fma(ZI[n, j, t], bi, v0[t])
                            v1[t] = fma(ZI[n + 1, j, t], bi, v1[t])
                            v2[t] = fma(ZI[n + 2, j, t], bi, v2[t])
                            v3[t] = fma(ZI[n + 3, j, t], bi, v3[t])
                m[i] = _lane_sum(v0)
                m[i + 1] = _lane_sum(v1)
                m[i + 2] = _lane_sum(v2)
                m[i + 3] = _lane_sum(v3)
            for i in range(nk4, nk):
                n = n0 + i
                for t in range(LANE):
                    v0[t] = 0.0
                for j in range(nb):
                    for t in range(LANE):
                        v0[t] = fma(ZR[n, j, t], bR[j, t], v0[t])
                if cplx:
                    for j in range(nb):
                        for t in range(LANE):
                            v0[t] = fma(ZI[n, j, t], bI[j, t], v0[t])
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
                av[i] = -_softplus(m[i])
                la = _log_softplus(-m[i])
                if la > Ml:
                    sl = sl * np.exp(Ml - la) + 1.0 if Ml - la > LOG_TINY else 1.0
                    Ml = la
                elif la - Ml > LOG_TINY:
                    sl += np.exp(la - Ml)
                if av[i] > bmax:
                    bmax = av[i]
        if bmax > Ma:
            # rescale what the earlier blocks summed (never at the first block)
            if Ma - bmax > LOG_TINY:
                rs = np.exp(Ma - bmax)
                sa *= rs
                for j in range(nb):
                    for t in range(LANE):
                        GR[j, t] *= rs
                if cplx:
                    for j in range(nb):
                        for t in range(LANE):
                            GI[j, t] *= rs
            else:
                sa = 0.0
                for j in range(nb):
                    for t in range(LANE):
                        GR[j, t] = 0.0
                if cplx:
                    for j in range(nb):
                        for t in range(LANE):
                            GI[j, t] = 0.0
            Ma = bmax
        if loss == EXP_LOSS:
            for u in range(BLOCK):
                m[u] = av[u] - Ma
            exp_block(m, e, BLOCK)
            sa += _sum16(e)
        else:
            for i in range(nk):
                m[i] = av[i] - Ma
            exp_block(m, e, nk)
            for i in range(nk):
                sa += e[i]
        for i in range(0, nk4, 4):
            n = n0 + i
            e0 = e[i]
            e1 = e[i + 1]
            e2 = e[i + 2]
            e3 = e[i + 3]
            if e0 == 0.0 and e1 == 0.0 and e2 == 0.0 and e3 == 0.0:
                continue
            for j in range(nb):
                for t in range(LANE):
                    GR[j, t] += fma(e0, ZR[n, j, t], e1 * ZR[n + 1, j, t]) + fma(e2, ZR[n + 2, j, t], e3 * ZR[n + 3, j, t])
            if cplx:
                for j in range(nb):
                    for t in range(LANE):
                        GI[j, t] += fma(e0, ZI[n, j, t], e1 * ZI[n + 1, j, t]) + fma(e2, ZI[n + 2, j, t], e3 * ZI[n + 3, j, t])
        for i in range(nk4, nk):
            n = n0 + i
            ei = e[i]
            if ei != 0.0:
                for j in range(nb):
                    for t in range(LANE):
                        GR[j, t] = fma(ei, ZR[n, j, t], GR[j, t])
                if cplx:
                    for j in range(nb):
                        for t in range(LANE):
                            GI[j, t] = fma(ei, ZI[n, j, t], GI[j, t])
    ps[PS_MA] = Ma
    ps[PS_SA] = sa
    ps[PS_ML] = Ml
    ps[PS_SL] = sl
    ps[PS_MMIN] = mmin
    if loss == EXP_LOSS:
        return Ma + np.log(sa)
    return Ml + np.log(sl)


@noalias_kernel
def _bins_loop(Wr, Wi, tWr, tWi, Ur, Ui, Cr, Ci, Qr, Qi, Pr, Pi, bR, bI, GR, GI, GnR, GnI, ZR, ZI, ZTR, ZTI,
               ipr, ipi, pwr, pwi, msk, aw, au, as_, a2, um2, a, um, ab, ps, m, av, e, mA, mB, v0, v1, v2, v3,
               logL, mult, tries, halv, status, out, packed, X2, Xh, loss, adaptive, step, steps):
    """The GD loop of ``gd_bins``: every array a distinct argument (``noalias``),
    the phases inlined; the accepted trial point and its ``G`` are copied (an
    argument cannot be swapped for another without losing ``noalias``).
    ``out`` receives ``[log L, min margin, log eta, steps done]``."""
    L, nb = Wr.shape[0], Wr.shape[1]
    nbi = Wi.shape[1]
    log_eta = out[2]
    bins_trial(Wr, Wi, Ur, Ui, 0.0, tWr, tWi, bR, bI, packed)
    logL[0] = bins_pass(ZR, ZI, ZTR, ZTI, bR, bI, loss, GR, GI, ps, m, av, e, mA, mB, v0, v1, v2, v3)
    Ma = ps[PS_MA]
    sa = ps[PS_SA]
    mmin = ps[PS_MMIN]
    if not is_finite(logL[0]):
        status[0] = NONFINITE
    done = 0
    need = True
    ratio = 1.0
    u2 = 0.0
    while status[0] == RUNNING and done < steps:
        if need:
            u2 = bins_direction(Wr, Wi, GR, GI, ipr, ipi, pwr, pwi, msk, Ur, Ui, Cr, Ci, Qr, Qi, Pr, Pi, aw, au,
                                as_, a2, um2, packed)
            for l in range(L):
                a[l] = np.sqrt(a2[l])
                um[l] = np.sqrt(um2[l])
            if adaptive:
                S, _ = smoothness(a, X2, Xh)
                if u2 == 0.0 or S == 0.0:
                    status[0] = STATIONARY  # zero gradient: GD stays here forever
                    break
            else:
                S = 1.0
            mult[0], ratio = step_multiplier(adaptive, loss, step, sa, Ma, logL[0], S)
            need = False
            tries[0] = 0
        if adaptive:
            # certify on the segment, halving until the descent lemma holds there
            while True:
                for l in range(L):
                    ab[l] = a[l] + mult[0] * um[l]
                Sb, Gb = smoothness(ab, X2, Xh)
                if segment_certified(mult[0], ratio, Sb, Gb, u2):
                    break
                mult[0] *= 0.5
                halv[0] += 1
        bins_trial(Wr, Wi, Ur, Ui, mult[0], tWr, tWi, bR, bI, packed)
        logLn = bins_pass(ZR, ZI, ZTR, ZTI, bR, bI, loss, GnR, GnI, ps, m, av, e, mA, mB, v0, v1, v2, v3)
        if guard_refuses(0, adaptive, logLn, logL, tries, halv, mult, status):
            continue
        if done == steps - 1:
            log_eta = (np.log(mult[0]) if mult[0] > 0.0 else -np.inf) - Ma
        for l in range(L):
            for j in range(nb):
                for t in range(LANE):
                    Wr[l, j, t] = tWr[l, j, t]
            for j in range(nbi):
                for t in range(LANE):
                    Wi[l, j, t] = tWi[l, j, t]
        for j in range(nb):
            for t in range(LANE):
                GR[j, t] = GnR[j, t]
        for j in range(nbi):
            for t in range(LANE):
                GI[j, t] = GnI[j, t]
        logL[0] = logLn
        Ma = ps[PS_MA]
        sa = ps[PS_SA]
        mmin = ps[PS_MMIN]
        done += 1
        need = True
        if not is_finite(logLn):
            status[0] = NONFINITE
    out[0] = logL[0]
    out[1] = mmin
    out[2] = log_eta
    out[3] = done


@kernel
def _empty64(n):
    """An uninitialized float64 array of ``n`` elements starting on a 64-byte boundary."""
    buf = np.empty(n + LANE)
    off = (-buf.ctypes.data) % 64 // 8
    return buf[off:off + n]


@kernel
def gd_bins(theta, L, K, Ki, packed, ZR, ZI, ZTR, ZTI, pwr, pwi, ipr, ipi, msk, X2, Xh, loss, adaptive, step, steps, stats):
    """``steps`` iterations of GD for one diag/conv run (``theta`` (P,) updated in
    place, ``stats`` (N_STATS,) as in ``gd_group``). ``ZR, ZI`` (N, nb, 8) hold the
    data in the slot layout and ``pwr, pwi, ipr, ipi, msk`` (nb, 8) the Parseval
    weights, their inverses and the mask of ``bins_direction`` (``bins_data``)."""
    if stats[ST_STATUS] != RUNNING:
        return
    nb = pwr.shape[0]
    nbi = nb if Ki != 0 else 0
    # every work array starts on a cache line (64 bytes: one 512-bit vector), so
    # no vector load or store straddles two lines (Numba aligns to 32)
    W = _empty64(2 * L * nb * LANE).reshape((2, L, nb, LANE))
    WI = _empty64(2 * L * nbi * LANE).reshape((2, L, nbi, LANE))
    U = _empty64(2 * L * nb * LANE).reshape((2, L, nb, LANE))
    UI = _empty64(2 * L * nbi * LANE).reshape((2, L, nbi, LANE))
    U[:] = 0.0
    UI[:] = 0.0
    R8 = _empty64(8 * nb * LANE).reshape((8, nb, LANE))
    I8 = _empty64(8 * nbi * LANE).reshape((8, nbi, LANE))
    V = _empty64(7 * LANE).reshape((7, LANE))
    S = np.empty((5, L))
    ps = np.empty(N_PS)
    B3 = _empty64(5 * BLOCK).reshape((5, BLOCK))
    logL = np.empty(1)
    mult = np.zeros(1)
    tries = np.zeros(1, np.int64)
    halv = np.zeros(1, np.int64)
    status = np.empty(1, np.int64)
    out = np.empty(4)
    status[0] = RUNNING
    out[2] = stats[ST_LOG_ETA]
    bins_layout(theta, L, K, Ki, packed, nb, W[0], WI[0])
    _bins_loop(W[0], WI[0], W[1], WI[1], U[0], UI[0], U[1], UI[1], R8[0], I8[0], R8[1], I8[1], R8[2], I8[2],
               R8[3], I8[3], R8[4], I8[4], ZR, ZI, ZTR, ZTI, ipr, ipi, pwr, pwi, msk, V[0], V[1], V[2], S[0], S[1], S[2],
               S[3], S[4], ps, B3[0], B3[1], B3[2], B3[3], B3[4], V[3], V[4], V[5], V[6], logL, mult, tries, halv, status, out,
               packed, X2, Xh, loss, adaptive, step, steps)
    _bins_unlayout(W[0], WI[0], L, K, Ki, packed, theta)
    stats[ST_LOG_LOSS] = out[0]
    stats[ST_MIN_MARGIN] = out[1]
    stats[ST_LOG_ETA] = out[2]
    stats[ST_HALVINGS] += halv[0]
    stats[ST_STEPS] = out[3]
    stats[ST_STATUS] = status[0]


def _aligned(a):
    """A copy of ``a`` whose data start on a 64-byte boundary (C order)."""
    a = np.asarray(a, dtype=np.float64)
    buf = np.empty(a.size + LANE)
    off = (-buf.ctypes.data) % 64 // 8
    out = buf[off:off + a.size].reshape(a.shape)
    out[...] = a
    return out


def bins_data(Z, pw, K, Ki, packed):
    """The data and weights of a PROD problem in the slot layout of ``gd_bins``:
    ``(ZR, ZI, pwr, pwi, ipr, ipi, msk)`` from ``Z`` (N, K + Ki) and ``pw`` (K,)."""
    N = Z.shape[0]
    kc = K - 1 if packed else K
    nb = max(1, -(-kc // LANE))
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
    shape = (nb, LANE)
    ZR = np.ascontiguousarray(Zb[:, :S].reshape(N, nb, LANE))
    ZI = np.ascontiguousarray(Zb[:, S:].reshape(N, nb, LANE)) if cplx else np.zeros((N, 0, LANE))
    # small problems also get Z transposed, samples innermost in blocks of BLOCK
    # (zero-padded): the margins of a block are then vectors, with no horizontal sums
    nq = -(-N // BLOCK) if nb <= TRANSPOSED_MAX_BLOCKS else 0
    Zp = np.zeros((nq * BLOCK, Zb.shape[1]))
    Zp[:N if nq else 0] = Zb[:N if nq else 0]
    ZT = Zp.reshape(nq, BLOCK, 2, nb, LANE).transpose(0, 2, 3, 4, 1)
    ZTR = np.ascontiguousarray(ZT[:, 0])
    ZTI = np.ascontiguousarray(ZT[:, 1]) if cplx else np.zeros((nq, 0, LANE, BLOCK))
    out = (ZR, ZI, ZTR, ZTI, pwr.reshape(shape), pwi.reshape(shape), ipr.reshape(shape), ipi.reshape(shape),
           msk.reshape(shape))
    return tuple(_aligned(a) for a in out)
