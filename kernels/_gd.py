"""Compiled gradient descent (eq. 7) on linear networks, K steps per call.

State is one flat float64 parameter row ``theta`` per run:

* ``PROD`` family (diagonal and convolutional nets): ``theta = [Re W (L*K), Im W (L*Ki)]``
  where ``W_l`` is the unnormalized half spectrum ``rfft(w_l)`` (conv, ``K = D//2+1``,
  ``Ki = K``) or ``w_l`` itself (diag, ``K = D``, ``Ki = 0``: the identity in place
  of the DFT). ``beta``'s representation is ``b = prod_l W_l`` (elementwise).
* ``FULL`` family (fully connected nets; the linear predictor is depth 1): the
  packed layers of ``_full`` with ``widths``/``offsets``.

The data enter once, as ``Z`` with ``m_n = <Z_n, b>`` the margin ``y_n <x_n, beta>``:
``Z = y x`` (diag, full) or ``Z = [Re, Im] of y_n pw_k X_n[k]`` (conv; ``pw_k = c_k / D``
are the Parseval weights of the half spectrum, ``c_k = 2`` except at DC/Nyquist).
So the conv loop runs entirely in the frequency domain: no FFT inside the loop, and
the iterates are exactly those of time-domain GD (``w_l = irfft(W_l)``).

Numerics. The loss is carried as ``log L`` (exp: ``logsumexp(-m)``; logistic:
``logsumexp(log softplus(-m))``); the gradient is ``-exp(Ma) * U`` with
``U = VJP(sum_n e_n Z_n)``, ``e_n = exp(a_n - Ma) <= 1`` the per-sample weights in
log domain (``a_n = -m_n`` for exp, ``log sigmoid(-m_n)`` for logistic) accumulated in
one pass with an online softmax. No raw margin is exponentiated; weights with
exponent below ``LOG_TINY`` are zero (no subnormal arithmetic).

Steps. ``fixed``: ``eta`` as in eq. (7). ``adaptive``: ``eta = c / (L S(w))`` with
``S`` the certified smoothness bound of ``smoothness`` (README, "Certified step
sizes"); each step is certified on the segment it travels (halving until the
descent lemma holds there) and guarded (a loss increase is undone and the step
halved), so the loss never increases.
"""

import numpy as np

from numba import prange

from ._config import exact_kernel, inline_kernel, kernel, parallel_kernel
from ._full import chain_row, vjp_row

PROD = 0
FULL = 1
EXP_LOSS = 0
LOGISTIC_LOSS = 1
LOG_TINY = -700.0
LOG_CERT = np.log(1.999)  # the descent lemma needs eta * H < 2 on the segment
MAX_HALVINGS = 200

# status codes
RUNNING = 0
NONFINITE = 1
STUCK = 2
STATIONARY = 3

# stats row layout
ST_LOG_LOSS = 0
ST_MIN_MARGIN = 1
ST_LOG_ETA = 2
ST_HALVINGS = 3
ST_STEPS = 4
ST_STATUS = 5
N_STATS = 6


@inline_kernel
def _softplus(z):
    if z > 0.0:
        return z + np.log1p(np.exp(-z))
    return np.log1p(np.exp(z))


@inline_kernel
def _log_softplus(z):
    """log(log(1 + e^z)), accurate for all z (no exp of a large argument)."""
    if z > 30.0:
        return np.log(z + np.log1p(np.exp(-z)))
    if z < -30.0:
        return z + np.log1p(-0.5 * np.exp(z))
    return np.log(np.log1p(np.exp(z)))


BLOCK = 16  # samples per block of the margin pass

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # 32 significant bits: n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10


_POW2 = 2.0 ** np.arange(-1022, 1)  # 2^n for the n of exp_block (all normal numbers)


@exact_kernel
def exp_block(d, e, nb):
    """``e[j] = exp(d[j])`` for ``d[j] <= 0``, and 0 where ``d[j] <= LOG_TINY``.

    A branch-free exp (Cody-Waite reduction by ln 2, degree-13 Taylor polynomial on
    |r| <= ln(2)/2, scaling by 2^n from a table) that LLVM vectorizes across the
    block: Numba has no vector exp without Intel SVML. Relative error about
    1e-16 (tested against numpy.exp)."""
    for j in range(nb):
        x = max(d[j], -708.0)
        n = np.floor(x * _LOG2E + 0.5)
        r = (x - n * _LN2_HI) - n * _LN2_LO
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        e[j] = p * _POW2[np.int64(n) + 1022] if d[j] > LOG_TINY else 0.0


@inline_kernel
def margin_pass(Z, b, loss, G, m, av, e):
    """One pass over the data: ``log L``, ``Ma`` and ``G = sum_n exp(a_n - Ma) Z_n``.

    Samples go in blocks: the block's margins (contiguous dot products), one
    running-max update (online softmax: G and the sum are rescaled only when
    the max grows), independent exponentials, then the block's rows are added to
    G while they are still in cache. Returns ``(log L, Ma, min margin, sa)`` with
    ``sa = sum_n exp(a_n - Ma)``."""
    N, P = Z.shape
    for k in range(P):
        G[k] = 0.0
    Ma = -np.inf
    sa = 0.0
    Ml = -np.inf
    sl = 0.0
    mmin = np.inf
    for n0 in range(0, N, BLOCK):
        nb = min(BLOCK, N - n0)
        for j in range(nb):
            s = 0.0
            for k in range(P):
                s += Z[n0 + j, k] * b[k]
            m[j] = s
        bmax = -np.inf
        for j in range(nb):
            if m[j] < mmin:
                mmin = m[j]
            if loss == EXP_LOSS:
                av[j] = -m[j]
            else:
                av[j] = -_softplus(m[j])
                la = _log_softplus(-m[j])
                if la > Ml:
                    sl = sl * np.exp(Ml - la) + 1.0 if Ml - la > LOG_TINY else 1.0
                    Ml = la
                elif la - Ml > LOG_TINY:
                    sl += np.exp(la - Ml)
            if av[j] > bmax:
                bmax = av[j]
        if bmax > Ma:
            if Ma - bmax > LOG_TINY:
                r = np.exp(Ma - bmax)
                sa *= r
                for k in range(P):
                    G[k] *= r
            else:
                sa = 0.0
                for k in range(P):
                    G[k] = 0.0
            Ma = bmax
        for j in range(nb):
            m[j] = av[j] - Ma
        exp_block(m, e, nb)
        for j in range(nb):
            ej = e[j]
            sa += ej
            if ej != 0.0:
                for k in range(P):
                    G[k] += ej * Z[n0 + j, k]
    if loss == EXP_LOSS:
        logL = Ma + np.log(sa)
    else:
        logL = Ml + np.log(sl)
    return logL, Ma, mmin, sa


@kernel
def _smoothness_loops(a, X2, Xh):
    L = a.shape[0]
    g = 0.0
    hmax = 0.0
    for l in range(L):
        p = 1.0
        for j in range(L):
            if j != l:
                p *= a[j]
        g += p * p
        hs = 0.0
        for k in range(L):
            if k != l:
                q = 1.0
                for j in range(L):
                    if j != l and j != k:
                        q *= a[j]
                hs += q
        if hs > hmax:
            hmax = hs
    return X2 * g + Xh * hmax, np.sqrt(X2 * g)


@inline_kernel
def smoothness(a, X2, Xh):
    """Certified bound ``S`` with ``||hess L(w)|| <= L(w) S`` and the bound ``Gm`` with
    ``||grad m_n(w)|| <= Gm``, from the layer magnitudes ``a`` (README, "Certified
    step sizes"):

    ``S = X2 sum_l q_l^2 + Xh max_l sum_{k != l} prod_{j != l,k} a_j``, ``q_l = prod_{j != l} a_j``,
    ``Gm = sqrt(X2 sum_l q_l^2)``."""
    L = a.shape[0]
    P = 1.0
    T = 0.0
    for j in range(L):
        if a[j] <= 0.0:
            return _smoothness_loops(a, X2, Xh)
        P *= a[j]
        T += 1.0 / a[j]
    g = 0.0
    hmax = 0.0
    for l in range(L):
        q = P / a[l]
        g += q * q
        hs = q * (T - 1.0 / a[l])
        if hs > hmax:
            hmax = hs
    return X2 * g + Xh * hmax, np.sqrt(X2 * g)


# ------------------------------------------------------------------ PROD family


@inline_kernel
def prod_beta(Wr, Wi, br, bi):
    """(br, bi) = prod_l W_l: real (``Wi`` has no columns) or split complex.

    Hot loops take 2-D arrays made once, outside the loop, and index them with
    ``range`` indices: views made inside the loop cost reference-count updates,
    and flat computed indices cannot be proven non-negative (Numba's wraparound
    check then blocks vectorization)."""
    L, K = Wr.shape
    Ki = Wi.shape[1]
    for k in range(K):
        br[k] = Wr[0, k]
    if Ki == 0:
        for l in range(1, L):
            for k in range(K):
                br[k] *= Wr[l, k]
    else:
        for k in range(K):
            bi[k] = Wi[0, k]
        for l in range(1, L):
            for k in range(K):
                x = br[k] * Wr[l, k] - bi[k] * Wi[l, k]
                bi[k] = br[k] * Wi[l, k] + bi[k] * Wr[l, k]
                br[k] = x


@inline_kernel
def _max(v, n):
    """max(v[:n]) (NaN entries are skipped: a NaN weight shows up in the loss)."""
    mx = v[0]
    for k in range(1, n):
        if v[k] > mx:
            mx = v[k]
    return mx


@inline_kernel
def prod_direction(Wr, Wi, Gr, Gi, pw, Ur, Ui, a, um, Cr, Ci, pr, pi, sw, su):
    """The ascent direction ``U_l = Gs conj(prod_{j != l} W_j)`` (``Gs = G / pw``,
    given as ``Gr``, ``Gi``), with the layer magnitudes ``a_l = max_k |W_l[k]|``,
    ``um_l = max_k |U_l[k]|``; returns ``||U||^2`` in the time domain (Parseval
    weights ``pw``). ``Cr, Ci`` (L, K), ``pr, pi, sw, su`` (K) are work arrays."""
    L, K = Wr.shape
    Ki = Wi.shape[1]
    u2 = 0.0
    # suffix products prod_{j > l} W_j into C
    for k in range(K):
        Cr[L - 1, k] = 1.0
        pr[k] = 1.0
    if Ki == 0:
        for l in range(L - 2, -1, -1):
            for k in range(K):
                Cr[l, k] = Cr[l + 1, k] * Wr[l + 1, k]
        for l in range(L):
            for k in range(K):
                uk = Gr[k] * Cr[l, k] * pr[k]
                Ur[l, k] = uk
                pr[k] *= Wr[l, k]
                sw[k] = Wr[l, k] * Wr[l, k]
                su[k] = uk * uk
                u2 += pw[k] * (uk * uk)
            a[l] = np.sqrt(_max(sw, K))
            um[l] = np.sqrt(_max(su, K))
        return u2
    for k in range(K):
        Ci[L - 1, k] = 0.0
        pi[k] = 0.0
    for l in range(L - 2, -1, -1):
        for k in range(K):
            Cr[l, k] = Cr[l + 1, k] * Wr[l + 1, k] - Ci[l + 1, k] * Wi[l + 1, k]
            Ci[l, k] = Cr[l + 1, k] * Wi[l + 1, k] + Ci[l + 1, k] * Wr[l + 1, k]
    for l in range(L):
        for k in range(K):
            p_r = pr[k]
            p_i = pi[k]
            cr = Cr[l, k] * p_r - Ci[l, k] * p_i
            cc = Cr[l, k] * p_i + Ci[l, k] * p_r
            ur = Gr[k] * cr + Gi[k] * cc
            ui = Gi[k] * cr - Gr[k] * cc
            Ur[l, k] = ur
            Ui[l, k] = ui
            wr = Wr[l, k]
            wi = Wi[l, k]
            pr[k] = p_r * wr - p_i * wi
            pi[k] = p_r * wi + p_i * wr
            uu = ur * ur + ui * ui
            sw[k] = wr * wr + wi * wi
            su[k] = uu
            u2 += pw[k] * uu
        a[l] = np.sqrt(_max(sw, K))
        um[l] = np.sqrt(_max(su, K))
    return u2


@kernel
def prod_sqnorm(v, L, K, Ki, pw):
    """Squared Euclidean norm of the time-domain weights (Parseval)."""
    oi = L * K
    s = 0.0
    for l in range(L):
        o = l * K
        for k in range(K):
            t = v[o + k] * v[o + k]
            if Ki != 0:
                t += v[oi + o + k] * v[oi + o + k]
            s += pw[k] * t
    return s


# ------------------------------------------------------------------ FULL family


@inline_kernel
def full_norms(theta, U, widths, offsets, a, um):
    """Frobenius norms of the layers of ``theta`` and ``U`` (upper bounds of their
    spectral norms); returns ``||U||^2``."""
    L = widths.shape[0] - 1
    u2 = 0.0
    for l in range(L):
        s = 0.0
        t = 0.0
        for i in range(offsets[l], offsets[l + 1]):
            s += theta[i] * theta[i]
            t += U[i] * U[i]
        a[l] = np.sqrt(s)
        um[l] = np.sqrt(t)
        u2 += t
    return u2


# ------------------------------------------------------------------ the loop


@kernel
def gd_run(theta, family, L, K, Ki, widths, offsets, Z, pw, X2, Xh, loss, adaptive, step, steps, stats):
    """Run ``steps`` iterations of GD from ``theta`` (updated in place).

    ``step`` is eta (fixed) or c (adaptive). ``stats`` (length N_STATS) receives
    log L, min margin, log eta of the last step, halvings (added to), steps done
    in this call, status. Every iteration depends on ``theta`` alone, so any
    split of a run into calls gives the same bits.

    All work arrays and their views are made here, once: nothing inside the loop
    allocates or creates views."""
    P = theta.shape[0]
    Pb = Z.shape[1]
    prod = family == PROD
    b = np.empty(Pb)
    G = np.empty(Pb)
    Gn = np.empty(Pb)
    Gs = np.zeros(max(K + Ki, 1))
    U = np.empty(P)
    cur = theta.copy()
    tn = np.empty(P)
    a = np.empty(L)
    um = np.empty(L)
    ab = np.empty(L)
    wm = np.empty(BLOCK)
    wa = np.empty(BLOCK)
    we = np.empty(BLOCK)
    # PROD views (harmless, unused shapes for FULL where K = 1, Ki = 0)
    nk = L * K if prod else 0
    kk = K if prod else 0
    ki = Ki if prod else 0
    cWr = cur[:nk].reshape((L, kk))
    cWi = cur[nk:nk + L * ki].reshape((L, ki))
    tWr = tn[:nk].reshape((L, kk))
    tWi = tn[nk:nk + L * ki].reshape((L, ki))
    Ur = U[:nk].reshape((L, kk))
    Ui = U[nk:nk + L * ki].reshape((L, ki))
    br = b[:kk]
    bi = b[kk:kk + ki]
    Gsr = Gs[:kk]
    Gsi = Gs[kk:kk + ki]
    Cr = np.empty((L, kk))
    Ci = np.empty((L, kk))
    pr = np.empty(kk)
    pi = np.empty(kk)
    sw = np.empty(kk)
    su = np.empty(kk)
    ipw = 1.0 / pw
    # FULL buffers
    roff = np.zeros(L + 2, np.int64)
    wmax = 1
    if not prod:
        for l in range(1, L + 1):
            roff[l + 1] = roff[l] + widths[l]
        for l in range(widths.shape[0]):
            wmax = max(wmax, widths[l])
    rs = np.empty(roff[L + 1])
    av = np.empty(wmax)
    tv = np.empty(wmax)

    if prod:
        prod_beta(cWr, cWi, br, bi)
    else:
        chain_row(cur, widths, offsets, roff, rs, b)
    logL, Ma, mmin, sa = margin_pass(Z, b, loss, G, wm, wa, we)
    log_eta = stats[ST_LOG_ETA]
    halvings = 0
    status = RUNNING
    done = 0
    if not np.isfinite(logL):
        status = NONFINITE
    while done < steps and status == RUNNING:
        # the gradient is -exp(Ma) * U: U = VJP(G) is the ascent direction of the margins
        if prod:
            for k in range(kk):
                Gsr[k] = G[k] * ipw[k]
            for k in range(ki):
                Gsi[k] = G[kk + k] * ipw[k]
            u2 = prod_direction(cWr, cWi, Gsr, Gsi, pw, Ur, Ui, a, um, Cr, Ci, pr, pi, sw, su)
        else:
            # rs holds the partial products of cur from the last chain_row
            vjp_row(cur, G, widths, offsets, roff, rs, av, tv, U)
            u2 = full_norms(cur, U, widths, offsets, a, um)
        if adaptive:
            S, _ = smoothness(a, X2, Xh)
            if u2 == 0.0 or S == 0.0:
                status = STATIONARY  # zero gradient: GD stays here forever
                break
            # eta = c / (L S): the step along U is eta exp(Ma) = c exp(Ma - log L) / S
            ratio = 1.0 / sa if loss == EXP_LOSS else np.exp(Ma - logL)
            mult = step * ratio / S
        else:
            lm = np.log(step) + Ma
            mult = np.exp(lm) if lm > LOG_TINY else 0.0
        accepted = False
        tries = 0
        while not accepted:
            if adaptive:
                # certify on the segment: eta L(w) S(a + |dW|) exp(Gm |dw|) < 2, where
                # eta L(w) = mult / ratio and exp(x) <= 1 / (1 - x) for x < 1
                while True:
                    for l in range(L):
                        ab[l] = a[l] + mult * um[l]
                    Sb, Gb = smoothness(ab, X2, Xh)
                    x = Gb * mult * np.sqrt(u2)
                    grow = 1.0 / (1.0 - x) if x < 0.5 else np.exp(x)
                    if mult / ratio * Sb * grow < 1.999:
                        break
                    mult *= 0.5
                    halvings += 1
            for i in range(P):
                tn[i] = cur[i] + mult * U[i]
            if prod:
                prod_beta(tWr, tWi, br, bi)
            else:
                chain_row(tn, widths, offsets, roff, rs, b)
            logLn, Man, mminn, san = margin_pass(Z, b, loss, Gn, wm, wa, we)
            if adaptive and not logLn <= logL:
                tries += 1
                halvings += 1
                mult *= 0.5
                if tries > MAX_HALVINGS:
                    status = STUCK
                    break
                continue
            accepted = True
        if not accepted:
            break
        if done == steps - 1:
            log_eta = (np.log(mult) if mult > 0.0 else -np.inf) - Ma
        for i in range(P):
            cur[i] = tn[i]
        for i in range(Pb):
            G[i] = Gn[i]
        logL = logLn
        Ma = Man
        mmin = mminn
        sa = san
        done += 1
        if not np.isfinite(logL):
            status = NONFINITE
    for i in range(P):
        theta[i] = cur[i]
    stats[ST_LOG_LOSS] = logL
    stats[ST_MIN_MARGIN] = mmin
    stats[ST_LOG_ETA] = log_eta
    stats[ST_HALVINGS] += halvings
    stats[ST_STEPS] = done
    stats[ST_STATUS] = status


@parallel_kernel
def gd_batch(thetas, family, L, K, Ki, widths, offsets, Zs, data_idx, pw, X2s, Xhs, loss, adaptive, step, steps, stats):
    """``gd_run`` for each row of ``thetas`` (in parallel over runs; every run is
    computed independently, so results do not depend on the thread count).
    Run ``r`` uses dataset ``Zs[data_idx[r]]``; runs whose status is not RUNNING
    are left alone."""
    R = thetas.shape[0]
    for r in prange(R):
        if stats[r, ST_STATUS] == RUNNING:
            d = data_idx[r]
            gd_run(thetas[r], family, L, K, Ki, widths, offsets, Zs[d], pw, X2s[d], Xhs[d],
                   loss, adaptive, step[r], steps, stats[r])
