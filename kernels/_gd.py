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

from ._config import exact_kernel, fast_noalias_kernel, ieee_kernel, inline_kernel, kernel
from ._full import chain_offsets, chain_row, vjp_row

PROD = 0
FULL = 1
EXP_LOSS = 0
LOGISTIC_LOSS = 1
LOG_TINY = -700.0
CERT = 1.999  # the descent lemma needs eta * H < 2 on the segment
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


@ieee_kernel
def is_finite(x):
    """``x`` is neither NaN nor +-inf. Compiled without fastmath and not inlined at
    Numba-IR level: under ``FASTMATH`` (reassociation) LLVM folds ``np.isfinite``
    of a computed value to True, so a loss of -inf or NaN went unnoticed."""
    return x - x == 0.0


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


@inline_kernel
def logistic_weight(m, Ml, sl):
    """The logistic loss at margin ``m`` in one pass: returns its log-weight ``a =
    log sigmoid(-m) = -softplus(m)`` and the online log-sum-exp state ``(Ml, sl)``
    updated with ``log l = log softplus(-m)``."""
    la = _log_softplus(-m)
    if la > Ml:
        sl = sl * np.exp(Ml - la) + 1.0 if Ml - la > LOG_TINY else 1.0
        Ml = la
    elif la - Ml > LOG_TINY:
        sl += np.exp(la - Ml)
    return -_softplus(m), Ml, sl


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


# online-softmax state of one run during a pass (columns of the ``ps`` array)
PS_MA = 0  # running max of the log-weights a_n
PS_SA = 1  # sum of exp(a_n - Ma)
PS_ML = 2  # running max of log l_n (logistic)
PS_SL = 3  # sum of exp(log l_n - Ml)
PS_MMIN = 4  # min margin
N_PS = 5


@inline_kernel
def pass_start(r, ps, G):
    ps[r, PS_MA] = -np.inf
    ps[r, PS_SA] = 0.0
    ps[r, PS_ML] = -np.inf
    ps[r, PS_SL] = 0.0
    ps[r, PS_MMIN] = np.inf
    for k in range(G.shape[1]):
        G[r, k] = 0.0


@fast_noalias_kernel
def pass_block(Z, n0, nb, b, r, loss, G, ps, m, av, e):
    """Samples ``n0 .. n0+nb-1`` of the one pass over the data for run ``r``: their
    margins ``m_n = <Z_n, b_r>`` (contiguous dot products), one running-max update
    of the online softmax (``G_r`` and the sum are rescaled only when the max
    grows), independent exponentials, then the rows are added to
    ``G_r = sum_n exp(a_n - Ma) Z_n`` while they are still in cache.
    ``m, av, e`` (BLOCK) are work buffers."""
    P = Z.shape[1]
    # margins, four rows at a time (b is loaded once for four dot products)
    nb4 = nb - nb % 4
    for j in range(0, nb4, 4):
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for k in range(P):
            bk = b[r, k]
            s0 += Z[n0 + j, k] * bk
            s1 += Z[n0 + j + 1, k] * bk
            s2 += Z[n0 + j + 2, k] * bk
            s3 += Z[n0 + j + 3, k] * bk
        m[j] = s0
        m[j + 1] = s1
        m[j + 2] = s2
        m[j + 3] = s3
    for j in range(nb4, nb):
        s0 = 0.0
        for k in range(P):
            s0 += Z[n0 + j, k] * b[r, k]
        m[j] = s0
    Ma = ps[r, PS_MA]
    sa = ps[r, PS_SA]
    Ml = ps[r, PS_ML]
    sl = ps[r, PS_SL]
    mmin = ps[r, PS_MMIN]
    bmax = -np.inf
    for j in range(nb):
        if m[j] < mmin:
            mmin = m[j]
        if loss == EXP_LOSS:
            av[j] = -m[j]
        else:
            av[j], Ml, sl = logistic_weight(m[j], Ml, sl)
        if av[j] > bmax:
            bmax = av[j]
    if bmax > Ma:
        if Ma - bmax > LOG_TINY:
            rs = np.exp(Ma - bmax)
            sa *= rs
            for k in range(P):
                G[r, k] *= rs
        else:
            sa = 0.0
            for k in range(P):
                G[r, k] = 0.0
        Ma = bmax
    for j in range(nb):
        m[j] = av[j] - Ma
    exp_block(m, e, nb)
    # G += sum_j e_j Z_j, four rows at a time (G is loaded and stored once per four rows);
    # rows with a zero weight add exact zeros
    for j in range(nb):
        sa += e[j]
    for j in range(0, nb4, 4):
        e0 = e[j]
        e1 = e[j + 1]
        e2 = e[j + 2]
        e3 = e[j + 3]
        if e0 == 0.0 and e1 == 0.0 and e2 == 0.0 and e3 == 0.0:
            continue
        for k in range(P):
            G[r, k] += (e0 * Z[n0 + j, k] + e1 * Z[n0 + j + 1, k]) + (e2 * Z[n0 + j + 2, k] + e3 * Z[n0 + j + 3, k])
    for j in range(nb4, nb):
        ej = e[j]
        if ej != 0.0:
            for k in range(P):
                G[r, k] += ej * Z[n0 + j, k]
    ps[r, PS_MA] = Ma
    ps[r, PS_SA] = sa
    ps[r, PS_ML] = Ml
    ps[r, PS_SL] = sl
    ps[r, PS_MMIN] = mmin


@inline_kernel
def pass_log_loss(r, loss, ps):
    """log L of run r after its pass: ``logsumexp(-m)`` or ``logsumexp(log softplus(-m))``."""
    if loss == EXP_LOSS:
        return ps[r, PS_MA] + np.log(ps[r, PS_SA])
    return ps[r, PS_ML] + np.log(ps[r, PS_SL])


@kernel
def margin_pass(Z, b, loss, G):
    """The pass over the data for the single predictor representation ``b``:
    returns ``(log L, Ma, min margin)`` and fills ``G`` (for tests and tools)."""
    b2 = b.reshape((1, b.shape[0]))
    G2 = G.reshape((1, G.shape[0]))
    ps = np.empty((1, N_PS))
    m = np.empty(BLOCK)
    av = np.empty(BLOCK)
    e = np.empty(BLOCK)
    pass_start(0, ps, G2)
    for n0 in range(0, Z.shape[0], BLOCK):
        pass_block(Z, n0, min(BLOCK, Z.shape[0] - n0), b2, 0, loss, G2, ps, m, av, e)
    return pass_log_loss(0, loss, ps), ps[0, PS_MA], ps[0, PS_MMIN]


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


@inline_kernel
def step_multiplier(adaptive, loss, step, sa, Ma, logL, S):
    """``(mult, ratio)`` of a new step: the update is ``W + mult U`` along the ascent
    direction ``U`` of the margins. Adaptive: ``eta = c / (L S)``, so
    ``mult = eta exp(Ma) = c exp(Ma - log L) / S``, ``ratio = exp(Ma - log L)``
    (``1 / sum_n e_n`` for the exponential loss). Fixed: ``mult = eta exp(Ma)`` (zero
    below ``LOG_TINY``). Never an exponential of a raw margin."""
    if adaptive:
        ratio = 1.0 / sa if loss == EXP_LOSS else np.exp(Ma - logL)
        return step * ratio / S, ratio
    lm = np.log(step) + Ma
    return (np.exp(lm) if lm > LOG_TINY else 0.0), 1.0


@inline_kernel
def segment_certified(mult, ratio, Sb, Gb, u2):
    """The step ``mult`` is certified on its segment: ``eta L(w) S(a + |dW|)
    exp(Gm |dw|) < CERT`` with ``eta L(w) = mult / ratio``, ``|dw| = mult sqrt(u2)``
    and ``exp(x) <= 1 / (1 - x)`` for ``x < 1`` (README, "Certified step sizes")."""
    x = Gb * mult * np.sqrt(u2)
    grow = 1.0 / (1.0 - x) if x < 0.5 else np.exp(x)
    return mult / ratio * Sb * grow < CERT


@inline_kernel
def guard_refuses(r, adaptive, logLn, logL, tries, halv, mult, status):
    """The guard: an adaptive step of run ``r`` whose loss ``logLn`` is not below the
    current ``logL[r]`` is refused and halved (``STUCK`` after ``MAX_HALVINGS`` in a
    row), so the loss never increases. Returns whether it was refused."""
    if adaptive and not logLn <= logL[r]:
        tries[r] += 1
        halv[r] += 1
        mult[r] *= 0.5
        if tries[r] > MAX_HALVINGS:
            status[r] = STUCK
        return True
    return False


# ------------------------------------------------------------------ PROD family


@inline_kernel
def prod_beta(Wr, Wi, r, b):
    """``b_r = prod_l W_l`` of run ``r``: real (``Wi`` has no columns) or split
    complex (``b_r = [Re, Im]``).

    Hot loops index whole arrays made once, outside the loop, with ``range``
    indices: views made inside the loop cost reference-count updates, and flat
    computed indices cannot be proven non-negative (Numba's wraparound check
    then blocks vectorization)."""
    L = Wr.shape[1]
    K = Wr.shape[2]
    Ki = Wi.shape[2]
    for k in range(K):
        b[r, k] = Wr[r, 0, k]
    if Ki == 0:
        for l in range(1, L):
            for k in range(K):
                b[r, k] *= Wr[r, l, k]
    else:
        for k in range(K):
            b[r, K + k] = Wi[r, 0, k]
        for l in range(1, L):
            for k in range(K):
                br = b[r, k]
                bi = b[r, K + k]
                b[r, k] = br * Wr[r, l, k] - bi * Wi[r, l, k]
                b[r, K + k] = br * Wi[r, l, k] + bi * Wr[r, l, k]


@inline_kernel
def prod_trial(cWr, cWi, Ur, Ui, mu, r, tWr, tWi, b):
    """The trial point ``W + mu U`` of run ``r`` and its ``b_r = prod_l W_l``, in one
    sweep (the same arithmetic as an update followed by ``prod_beta``)."""
    L = cWr.shape[1]
    K = cWr.shape[2]
    Ki = cWi.shape[2]
    for k in range(K):
        x = cWr[r, 0, k] + mu * Ur[r, 0, k]
        tWr[r, 0, k] = x
        b[r, k] = x
    if Ki == 0:
        for l in range(1, L):
            for k in range(K):
                x = cWr[r, l, k] + mu * Ur[r, l, k]
                tWr[r, l, k] = x
                b[r, k] *= x
        return
    for k in range(K):
        x = cWi[r, 0, k] + mu * Ui[r, 0, k]
        tWi[r, 0, k] = x
        b[r, K + k] = x
    for l in range(1, L):
        for k in range(K):
            wr = cWr[r, l, k] + mu * Ur[r, l, k]
            wi = cWi[r, l, k] + mu * Ui[r, l, k]
            tWr[r, l, k] = wr
            tWi[r, l, k] = wi
            br = b[r, k]
            bi = b[r, K + k]
            b[r, k] = br * wr - bi * wi
            b[r, K + k] = br * wi + bi * wr


@inline_kernel
def _max(v, n):
    """max(v[:n]) for n >= 1 over four independent lanes (a single running max is a
    chain of dependent compares; without ``nnan`` LLVM will not vectorize it).
    NaN entries are skipped: a NaN weight shows up in the loss."""
    m0 = v[0]
    m1 = m0
    m2 = m0
    m3 = m0
    n4 = n - n % 4
    for k in range(0, n4, 4):
        x0 = v[k]
        x1 = v[k + 1]
        x2 = v[k + 2]
        x3 = v[k + 3]
        m0 = x0 if x0 > m0 else m0
        m1 = x1 if x1 > m1 else m1
        m2 = x2 if x2 > m2 else m2
        m3 = x3 if x3 > m3 else m3
    for k in range(n4, n):
        x0 = v[k]
        m0 = x0 if x0 > m0 else m0
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    return m2 if m2 > m0 else m0


@inline_kernel
def prod_direction(Wr, Wi, r, Gs, pw, Ur, Ui, a, um, Cr, Ci, pr, pi, sw, su):
    """The ascent direction of run ``r``, ``U_l = Gs conj(prod_{j != l} W_j)``
    (``Gs = G / pw`` as ``[Re, Im]``), with the layer magnitudes
    ``a_l = max_k |W_l[k]|``, ``um_l = max_k |U_l[k]|``; returns ``||U||^2`` in the
    time domain (Parseval weights ``pw``). ``Cr, Ci`` (L, K), ``pr, pi, sw, su``
    (K) are work arrays."""
    L = Wr.shape[1]
    K = Wr.shape[2]
    Ki = Wi.shape[2]
    u2 = 0.0
    # suffix products prod_{j > l} W_j into C
    for k in range(K):
        Cr[L - 1, k] = 1.0
        pr[k] = 1.0
    if Ki == 0:
        for l in range(L - 2, -1, -1):
            for k in range(K):
                Cr[l, k] = Cr[l + 1, k] * Wr[r, l + 1, k]
        for l in range(L):
            for k in range(K):
                uk = Gs[r, k] * Cr[l, k] * pr[k]
                Ur[r, l, k] = uk
                pr[k] *= Wr[r, l, k]
                sw[k] = Wr[r, l, k] * Wr[r, l, k]
                su[k] = uk * uk
                u2 += pw[k] * (uk * uk)
            a[r, l] = np.sqrt(_max(sw, K))
            um[r, l] = np.sqrt(_max(su, K))
        return u2
    for k in range(K):
        Ci[L - 1, k] = 0.0
        pi[k] = 0.0
    for l in range(L - 2, -1, -1):
        for k in range(K):
            Cr[l, k] = Cr[l + 1, k] * Wr[r, l + 1, k] - Ci[l + 1, k] * Wi[r, l + 1, k]
            Ci[l, k] = Cr[l + 1, k] * Wi[r, l + 1, k] + Ci[l + 1, k] * Wr[r, l + 1, k]
    for l in range(L):
        for k in range(K):
            p_r = pr[k]
            p_i = pi[k]
            cr = Cr[l, k] * p_r - Ci[l, k] * p_i
            cc = Cr[l, k] * p_i + Ci[l, k] * p_r
            gr = Gs[r, k]
            gi = Gs[r, K + k]
            ur = gr * cr + gi * cc
            ui = gi * cr - gr * cc
            Ur[r, l, k] = ur
            Ui[r, l, k] = ui
            wr = Wr[r, l, k]
            wi = Wi[r, l, k]
            pr[k] = p_r * wr - p_i * wi
            pi[k] = p_r * wi + p_i * wr
            uu = ur * ur + ui * ui
            sw[k] = wr * wr + wi * wi
            su[k] = uu
            u2 += pw[k] * uu
        a[r, l] = np.sqrt(_max(sw, K))
        um[r, l] = np.sqrt(_max(su, K))
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


@kernel
def prod_row_measures(theta, L, K, Ki, pw, pweights, refs, out):
    """What a history row of a diag/conv run needs from ``theta``, in one call:
    ``out[0] = ||beta||^2`` (from its spectrum ``b = prod_l W_l``, Parseval weights
    ``pweights`` (K + Ki)), ``out[1]`` the squared norm of the time-domain weights
    (``prod_sqnorm``) and ``out[2 + j] = <beta, ref_j>`` for the references given as
    spectra ``refs`` (n, K + Ki)."""
    b = np.empty((1, K + Ki))
    prod_beta(theta[:L * K].reshape(1, L, K), theta[L * K:].reshape(1, L, Ki), 0, b)
    s = 0.0
    for j in range(K + Ki):
        s += pweights[j] * b[0, j] * b[0, j]
    out[0] = s
    out[1] = prod_sqnorm(theta, L, K, Ki, pw)
    for i in range(refs.shape[0]):
        d = 0.0
        for j in range(K + Ki):
            d += refs[i, j] * (pweights[j] * b[0, j])
        out[2 + i] = d


# ------------------------------------------------------------------ FULL family


@inline_kernel
def full_norms(theta, U, r, widths, offsets, a, um):
    """Frobenius norms of the layers of ``theta[r]`` and ``U[r]`` (upper bounds of
    their spectral norms); returns ``||U_r||^2``."""
    L = widths.shape[0] - 1
    u2 = 0.0
    for l in range(L):
        s = 0.0
        t = 0.0
        for i in range(offsets[l], offsets[l + 1]):
            s += theta[r, i] * theta[r, i]
            t += U[r, i] * U[r, i]
        a[r, l] = np.sqrt(s)
        um[r, l] = np.sqrt(t)
        u2 += t
    return u2


@kernel
def gd_group(thetas, family, L, K, Ki, widths, offsets, Z, pw, X2, Xh, loss, adaptive, step, steps, stats):
    """Run ``steps`` iterations of GD for each run (row of ``thetas``, updated in
    place) on one shared dataset ``Z``, in lockstep.

    Each round, every active run prepares its trial point (direction, step,
    certification); then one pass over ``Z`` serves all of them, block by block
    (a block of samples is read from memory once for all runs); then each run
    accepts or halves. A run's arithmetic is the same code whatever the other
    runs are, so a run gives the same bits alone or in any group.

    ``step[r]`` is eta (fixed) or c (adaptive). ``stats[r]`` (N_STATS) receives
    log L, min margin, log eta of the last step, halvings (added to), steps done
    in this call, status; runs whose status is not RUNNING are left alone. Every
    iteration depends on ``thetas[r]`` alone, so any split into calls gives the
    same bits. All work arrays are made here, once."""
    R, P = thetas.shape
    N, Pb = Z.shape
    prod = family == PROD
    kk = K if prod else 0
    ki = Ki if prod else 0
    nk = L * kk
    b = np.empty((R, Pb))
    G = np.empty((R, Pb))
    Gn = np.empty((R, Pb))
    Gs = np.zeros((R, kk + ki))
    cur = thetas.copy()
    tn = np.empty((R, P))
    U = np.empty((R, P))
    # PROD state as (R, L, K) arrays (copies of the flat rows; written back at the end)
    cWr = np.empty((R, L, kk))
    cWi = np.empty((R, L, ki))
    tWr = np.empty((R, L, kk))
    tWi = np.empty((R, L, ki))
    Ur = np.empty((R, L, kk))
    Ui = np.empty((R, L, ki))
    if prod:
        for r in range(R):
            for l in range(L):
                for k in range(kk):
                    cWr[r, l, k] = thetas[r, l * kk + k]
                for k in range(ki):
                    cWi[r, l, k] = thetas[r, nk + l * kk + k]
    Cr = np.empty((L, kk))
    Ci = np.empty((L, kk))
    pr = np.empty(kk)
    pi = np.empty(kk)
    sw = np.empty(kk)
    su = np.empty(kk)
    ipw = 1.0 / pw
    # FULL buffers (PROD passes widths = (1, 1): harmless sizes)
    roff = chain_offsets(widths)
    rs = np.empty((R, roff[-1]))
    av_ = np.empty(widths.max())
    tv_ = np.empty(widths.max())
    # per-run scalars
    a = np.empty((R, L))
    um = np.empty((R, L))
    ab = np.empty(L)
    logL = np.empty(R)
    Ma = np.empty(R)
    mmin = np.empty(R)
    sa = np.empty(R)
    mult = np.zeros(R)
    ratio = np.ones(R)
    u2 = np.zeros(R)
    done = np.zeros(R, np.int64)
    tries = np.zeros(R, np.int64)
    halv = np.zeros(R, np.int64)
    status = np.empty(R, np.int64)
    need = np.ones(R, np.bool_)
    inpass = np.zeros(R, np.bool_)
    log_eta = np.empty(R)
    ps = np.empty((R, N_PS))
    m = np.empty(BLOCK)
    av = np.empty(BLOCK)
    e = np.empty(BLOCK)
    for r in range(R):
        status[r] = stats[r, ST_STATUS]
        log_eta[r] = stats[r, ST_LOG_ETA]
        inpass[r] = status[r] == RUNNING

    # the pass at the starting points
    for r in range(R):
        if inpass[r]:
            if prod:
                prod_beta(cWr, cWi, r, b)
            else:
                chain_row(cur[r], widths, offsets, roff, rs[r], b[r])
            pass_start(r, ps, G)
    for n0 in range(0, N, BLOCK):
        nb = min(BLOCK, N - n0)
        for r in range(R):
            if inpass[r]:
                pass_block(Z, n0, nb, b, r, loss, G, ps, m, av, e)
    for r in range(R):
        if inpass[r]:
            logL[r] = pass_log_loss(r, loss, ps)
            Ma[r] = ps[r, PS_MA]
            sa[r] = ps[r, PS_SA]
            mmin[r] = ps[r, PS_MMIN]
            if not is_finite(logL[r]):
                status[r] = NONFINITE

    while True:
        # 1. every active run prepares a trial point
        any_active = False
        for r in range(R):
            inpass[r] = False
            if status[r] != RUNNING or done[r] >= steps:
                continue
            if need[r]:
                # the gradient is -exp(Ma) * U: U = VJP(G) is the ascent direction of the margins
                if prod:
                    for k in range(kk):
                        Gs[r, k] = G[r, k] * ipw[k]
                    for k in range(ki):
                        Gs[r, kk + k] = G[r, kk + k] * ipw[k]
                    u2[r] = prod_direction(cWr, cWi, r, Gs, pw, Ur, Ui, a, um, Cr, Ci, pr, pi, sw, su)
                else:
                    # rs[r] holds the partial products of cur[r] from the last chain_row
                    vjp_row(cur[r], G[r], widths, offsets, roff, rs[r], av_, tv_, U[r])
                    u2[r] = full_norms(cur, U, r, widths, offsets, a, um)
                if adaptive:
                    for l in range(L):
                        ab[l] = a[r, l]
                    S, _ = smoothness(ab, X2, Xh)
                    if u2[r] == 0.0 or S == 0.0:
                        status[r] = STATIONARY  # zero gradient: GD stays here forever
                        continue
                else:
                    S = 1.0
                mult[r], ratio[r] = step_multiplier(adaptive, loss, step[r], sa[r], Ma[r], logL[r], S)
                need[r] = False
                tries[r] = 0
            if adaptive:
                # certify on the segment, halving until the descent lemma holds there
                while True:
                    for l in range(L):
                        ab[l] = a[r, l] + mult[r] * um[r, l]
                    Sb, Gb = smoothness(ab, X2, Xh)
                    if segment_certified(mult[r], ratio[r], Sb, Gb, u2[r]):
                        break
                    mult[r] *= 0.5
                    halv[r] += 1
            mu = mult[r]
            if prod:
                prod_trial(cWr, cWi, Ur, Ui, mu, r, tWr, tWi, b)
            else:
                for i in range(P):
                    tn[r, i] = cur[r, i] + mu * U[r, i]
                chain_row(tn[r], widths, offsets, roff, rs[r], b[r])
            pass_start(r, ps, Gn)
            inpass[r] = True
            any_active = True
        if not any_active:
            break
        # 2. one pass over the data for all trial points
        for n0 in range(0, N, BLOCK):
            nb = min(BLOCK, N - n0)
            for r in range(R):
                if inpass[r]:
                    pass_block(Z, n0, nb, b, r, loss, Gn, ps, m, av, e)
        # 3. accept, or halve (the guard: the loss never increases)
        for r in range(R):
            if not inpass[r]:
                continue
            logLn = pass_log_loss(r, loss, ps)
            if guard_refuses(r, adaptive, logLn, logL, tries, halv, mult, status):
                continue
            if done[r] == steps - 1:
                log_eta[r] = (np.log(mult[r]) if mult[r] > 0.0 else -np.inf) - Ma[r]
            if prod:
                for l in range(L):
                    for k in range(kk):
                        cWr[r, l, k] = tWr[r, l, k]
                    for k in range(ki):
                        cWi[r, l, k] = tWi[r, l, k]
            else:
                for i in range(P):
                    cur[r, i] = tn[r, i]
            for i in range(Pb):
                G[r, i] = Gn[r, i]
            logL[r] = logLn
            Ma[r] = ps[r, PS_MA]
            sa[r] = ps[r, PS_SA]
            mmin[r] = ps[r, PS_MMIN]
            done[r] += 1
            need[r] = True
            if not is_finite(logLn):
                status[r] = NONFINITE

    for r in range(R):
        if stats[r, ST_STATUS] != RUNNING:
            continue
        if prod:
            for l in range(L):
                for k in range(kk):
                    thetas[r, l * kk + k] = cWr[r, l, k]
                for k in range(ki):
                    thetas[r, nk + l * kk + k] = cWi[r, l, k]
        else:
            for i in range(P):
                thetas[r, i] = cur[r, i]
        stats[r, ST_LOG_LOSS] = logL[r]
        stats[r, ST_MIN_MARGIN] = mmin[r]
        stats[r, ST_LOG_ETA] = log_eta[r]
        stats[r, ST_HALVINGS] += halv[r]
        stats[r, ST_STEPS] = done[r]
        stats[r, ST_STATUS] = status[r]


@kernel
def gd_run(theta, family, L, K, Ki, widths, offsets, Z, pw, X2, Xh, loss, adaptive, step, steps, stats):
    """``gd_group`` for one run: ``theta`` (P,), ``stats`` (N_STATS,), ``step`` a float."""
    st = np.empty(1)
    st[0] = step
    gd_group(theta.reshape((1, theta.shape[0])), family, L, K, Ki, widths, offsets, Z, pw, X2, Xh,
             loss, adaptive, st, steps, stats.reshape((1, stats.shape[0])))
