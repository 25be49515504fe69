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

from ._config import kernel, parallel_kernel
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


@kernel
def _softplus(z):
    if z > 0.0:
        return z + np.log1p(np.exp(-z))
    return np.log1p(np.exp(z))


@kernel
def _log_softplus(z):
    """log(log(1 + e^z)), accurate for all z (no exp of a large argument)."""
    if z > 30.0:
        return np.log(z + np.log1p(np.exp(-z)))
    if z < -30.0:
        return z + np.log1p(-0.5 * np.exp(z))
    return np.log(np.log1p(np.exp(z)))


BLOCK = 16  # samples per block of the margin pass


@kernel
def margin_pass(Z, b, loss, G):
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
    m = np.empty(BLOCK)
    av = np.empty(BLOCK)
    e = np.empty(BLOCK)
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
            d = av[j] - Ma
            e[j] = np.exp(d) if d > LOG_TINY else 0.0
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


@kernel
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


@kernel
def prod_beta(theta, L, K, Ki, b):
    """b = prod_l W_l (real, or split complex when Ki == K)."""
    for k in range(K):
        b[k] = theta[k]
    if Ki == 0:
        for l in range(1, L):
            o = l * K
            for k in range(K):
                b[k] *= theta[o + k]
    else:
        oi = L * K
        for k in range(K):
            b[K + k] = theta[oi + k]
        for l in range(1, L):
            o = l * K
            for k in range(K):
                wr = theta[o + k]
                wi = theta[oi + o + k]
                br = b[k]
                bi = b[K + k]
                b[k] = br * wr - bi * wi
                b[K + k] = br * wi + bi * wr


@kernel
def prod_direction(theta, L, K, Ki, Gs, pw, U, a, um, C, pre):
    """The ascent direction ``U_l = Gs conj(prod_{j != l} W_j)`` (``Gs = G / pw``),
    with the layer magnitudes ``a_l = max_k |W_l[k]|``, ``um_l = max_k |U_l[k]|``;
    returns ``||U||^2`` in the time domain (Parseval weights ``pw``).

    ``C`` (L * (K + Ki)) and ``pre`` (K + Ki) are work buffers."""
    oi = L * K
    ci = L * K  # imaginary parts of C at C[ci + l*K + k]
    u2 = 0.0
    # suffix products prod_{j > l} W_j into C
    for k in range(K):
        C[(L - 1) * K + k] = 1.0
        pre[k] = 1.0
    if Ki == 0:
        for l in range(L - 2, -1, -1):
            o = l * K
            for k in range(K):
                C[o + k] = C[o + K + k] * theta[o + K + k]
        for l in range(L):
            o = l * K
            amax = 0.0
            umax = 0.0
            for k in range(K):
                w = theta[o + k]
                u = Gs[k] * C[o + k] * pre[k]
                U[o + k] = u
                pre[k] *= w
                amax = max(amax, w * w)
                umax = max(umax, u * u)
                u2 += pw[k] * u * u
            a[l] = np.sqrt(amax)
            um[l] = np.sqrt(umax)
    else:
        for k in range(K):
            C[ci + (L - 1) * K + k] = 0.0
            pre[K + k] = 0.0
        for l in range(L - 2, -1, -1):
            o = l * K
            for k in range(K):
                wr = theta[o + K + k]
                wi = theta[oi + o + K + k]
                cr = C[o + K + k]
                cc = C[ci + o + K + k]
                C[o + k] = cr * wr - cc * wi
                C[ci + o + k] = cr * wi + cc * wr
        for l in range(L):
            o = l * K
            amax = 0.0
            umax = 0.0
            for k in range(K):
                pr = pre[k]
                pi = pre[K + k]
                cr = C[o + k] * pr - C[ci + o + k] * pi
                cc = C[o + k] * pi + C[ci + o + k] * pr
                gr = Gs[k]
                gi = Gs[K + k]
                ur = gr * cr + gi * cc
                ui = gi * cr - gr * cc
                U[o + k] = ur
                U[oi + o + k] = ui
                wr = theta[o + k]
                wi = theta[oi + o + k]
                pre[k] = pr * wr - pi * wi
                pre[K + k] = pr * wi + pi * wr
                uu = ur * ur + ui * ui
                amax = max(amax, wr * wr + wi * wi)
                umax = max(umax, uu)
                u2 += pw[k] * uu
            a[l] = np.sqrt(amax)
            um[l] = np.sqrt(umax)
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


@kernel
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
def _beta_repr(family, theta, L, K, Ki, widths, offsets, roff, rs, b):
    if family == PROD:
        prod_beta(theta, L, K, Ki, b)
    else:
        chain_row(theta, widths, offsets, roff, rs, b)


@kernel
def gd_run(theta, family, L, K, Ki, widths, offsets, Z, pw, X2, Xh, loss, adaptive, step, steps, stats):
    """Run ``steps`` iterations of GD from ``theta`` (updated in place).

    ``step`` is eta (fixed) or c (adaptive). ``stats`` (length N_STATS) receives
    log L, min margin, log eta of the last step, halvings (added to), steps done
    in this call, status. Every iteration depends on ``theta`` alone, so any
    split of a run into calls gives the same bits."""
    P = theta.shape[0]
    Pb = Z.shape[1]
    b = np.empty(Pb)
    G = np.empty(Pb)
    Gn = np.empty(Pb)
    Gs = np.empty(Pb)
    U = np.empty(P)
    cur = theta.copy()
    tn = np.empty(P)
    a = np.empty(L)
    um = np.empty(L)
    ab = np.empty(L)
    C = np.empty(L * (K + Ki))
    pre = np.empty(K + Ki)
    ipw = 1.0 / pw
    roff = np.zeros(L + 2, np.int64)
    wmax = 1
    if family == FULL:
        for l in range(1, L + 1):
            roff[l + 1] = roff[l] + widths[l]
        for l in range(widths.shape[0]):
            wmax = max(wmax, widths[l])
    rs = np.empty(roff[L + 1])
    av = np.empty(wmax)
    tv = np.empty(wmax)

    _beta_repr(family, cur, L, K, Ki, widths, offsets, roff, rs, b)
    logL, Ma, mmin, sa = margin_pass(Z, b, loss, G)
    log_eta = stats[ST_LOG_ETA]
    halvings = 0
    status = RUNNING
    done = 0
    if not np.isfinite(logL):
        status = NONFINITE
    while done < steps and status == RUNNING:
        # the gradient is -exp(Ma) * U: U = VJP(G) is the ascent direction of the margins
        if family == PROD:
            for k in range(K):
                Gs[k] = G[k] * ipw[k]
            for k in range(Ki):
                Gs[K + k] = G[K + k] * ipw[k]
            u2 = prod_direction(cur, L, K, Ki, Gs, pw, U, a, um, C, pre)
        else:
            # rs holds the partial products of cur from the last _beta_repr
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
                # certify on the segment: eta * L_seg * S_seg < 2, with
                # L_seg <= L exp(Gm_seg |dw|), i.e. (mult S / ratio / step) c (S_seg/S) exp(.) < 2
                while True:
                    for l in range(L):
                        ab[l] = a[l] + mult * um[l]
                    Sb, Gb = smoothness(ab, X2, Xh)
                    x = Gb * mult * np.sqrt(u2)
                    grow = 1.0 / (1.0 - x) if x < 0.5 else np.exp(x)  # >= exp(x)
                    if mult / ratio * Sb * grow < 1.999:
                        break
                    mult *= 0.5
                    halvings += 1
            for i in range(P):
                tn[i] = cur[i] + mult * U[i]
            _beta_repr(family, tn, L, K, Ki, widths, offsets, roff, rs, b)
            logLn, Man, mminn, san = margin_pass(Z, b, loss, Gn)
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
        log_eta = (np.log(mult) if mult > 0.0 else -np.inf) - Ma if done == steps - 1 else np.nan
        cur, tn = tn, cur
        G, Gn = Gn, G
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
