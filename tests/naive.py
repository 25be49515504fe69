"""Slow, literal reference implementations, straight from the paper's equations.

Nothing here imports fastbias: every fast path in ``fastbias.kernels`` is held
against these. The networks are evaluated layer by layer exactly as eqs. (1)-(3)
are written (Gunasekar, Lee, Soudry, Srebro 2018), with explicit loops over the
indices that appear in the equations. Each forward pass accepts one input
``x`` of shape (D,) or a stack of inputs of shape (n, D) (NumPy broadcasting
over the leading axis only; the equations' own indices are explicit loops), so
that ``beta_of`` can feed all unit vectors e_i at once.

All computations are done in float64 (float32 inputs are upcast exactly), so the
references are exact up to float64 rounding.
"""

import numpy as np


# --------------------------------------------------------------------------- eq. (2)


def xcorr_naive(h, w):
    """Eq. (2): ``out[d] = sum_{k=0}^{D-1} w[k] h[(d + k) mod D]``.

    ``h``: (D,) or (n, D); ``w``: (D,). Explicit loops over d and k.
    """
    h = np.asarray(h, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    D = w.shape[-1]
    assert w.ndim == 1 and h.shape[-1] == D
    out = np.zeros(h.shape, dtype=np.float64)
    for d in range(D):
        for k in range(D):
            out[..., d] += w[k] * h[..., (d + k) % D]
    return out


def conv_naive(a, b):
    """Circular convolution ``(a (*) b)[m] = sum_k a[k] b[(m - k) mod D]`` (1-D, loops)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    D = a.shape[-1]
    out = np.zeros(D, dtype=np.float64)
    for m in range(D):
        for k in range(D):
            out[m] += a[k] * b[(m - k) % D]
    return out


def flip(w):
    """The paper's flipped vector: ``w_flip[k] = w[D - k - 1]`` (1-D)."""
    w = np.asarray(w, dtype=np.float64)
    D = w.shape[-1]
    assert w.ndim == 1
    return np.array([w[D - k - 1] for k in range(D)], dtype=np.float64)


def shift(z, s):
    """``(T_s z)[k] = z[(k - s) mod D]`` (1-D)."""
    z = np.asarray(z, dtype=np.float64)
    D = z.shape[-1]
    return np.array([z[(k - s) % D] for k in range(D)], dtype=np.float64)


def unitary_dft(z):
    """The paper's Fourier representation, literally:
    ``z_hat[d] = D^{-1/2} sum_{p=0}^{D-1} z[p] omega_D^{p d}``, ``omega_D = exp(-2 pi i / D)``."""
    z = np.asarray(z, dtype=np.float64)
    D = z.shape[-1]
    omega = np.exp(-2j * np.pi / D)
    out = np.zeros(D, dtype=np.complex128)
    for d in range(D):
        for p in range(D):
            out[d] += z[p] * omega ** ((p * d) % D)
    return out / np.sqrt(D)


# --------------------------------------------------------------------------- networks


def conv_net_forward(ws, x):
    """Eqs. (2)-(3): ``h_0 = x``, ``h_l = h_{l-1} (star) w_l`` for l = 1..L-1,
    ``f = <h_{L-1}, w_L>``. ``ws``: (L, D); ``x``: (D,) or (n, D)."""
    ws = np.asarray(ws, dtype=np.float64)
    L, D = ws.shape
    h = np.asarray(x, dtype=np.float64)
    for l in range(L - 1):
        h = xcorr_naive(h, ws[l])
    f = np.zeros(h.shape[:-1], dtype=np.float64)
    for d in range(D):
        f += h[..., d] * ws[L - 1, d]
    return f


def diag_net_forward(ws, x):
    """Diagonal network: ``h_l = w_l (.) h_{l-1}`` for l = 1..L-1, ``f = <h_{L-1}, w_L>``."""
    ws = np.asarray(ws, dtype=np.float64)
    L, D = ws.shape
    h = np.asarray(x, dtype=np.float64)
    for l in range(L - 1):
        new = np.zeros(h.shape, dtype=np.float64)
        for d in range(D):
            new[..., d] = ws[l, d] * h[..., d]
        h = new
    f = np.zeros(h.shape[:-1], dtype=np.float64)
    for d in range(D):
        f += h[..., d] * ws[L - 1, d]
    return f


def full_net_forward(Ws, x):
    """Eq. (1): ``h_l = W_l^T h_{l-1}`` with ``W_l`` of shape (D_{l-1}, D_l), ``D_L = 1``;
    ``f = h_L`` (a scalar per input). ``x``: (D,) or (n, D)."""
    h = np.asarray(x, dtype=np.float64)
    for W in Ws:
        W = np.asarray(W, dtype=np.float64)
        rows, cols = W.shape
        assert h.shape[-1] == rows
        new = np.zeros(h.shape[:-1] + (cols,), dtype=np.float64)
        for j in range(cols):
            for i in range(rows):
                new[..., j] += W[i, j] * h[..., i]
        h = new
    assert h.shape[-1] == 1, "the last layer must have width D_L = 1"
    return h[..., 0]


# --------------------------------------------------------------------------- predictors


def beta_of(forward, params, D, *, check=True, seed=12345):
    """The linear predictor of a network: ``beta[i] = forward(params, e_i)``.

    All unit vectors are fed at once, as the rows of the identity (the forward
    passes broadcast over a leading input axis). The network is linear in x, so
    ``f(x) = <x, beta>``; with ``check`` that is verified on a random x too,
    relative to the magnitude of the terms ``sum_i |x_i beta_i|``.
    """
    beta = np.asarray(forward(params, np.eye(D)), dtype=np.float64)
    assert beta.shape == (D,)
    if check:
        x = np.random.default_rng(seed).standard_normal(D)
        f = forward(params, x)
        lin = 0.0
        for i in range(D):
            lin += x[i] * beta[i]
        scale = np.sum(np.abs(x * beta)) + np.max(np.abs(beta)) + 1e-300
        assert abs(f - lin) <= 1e-10 * scale, (f, lin)
    return beta


def _layered_beta(forward, ws):
    """beta of ``forward``'s network for each (L, D) block of ``ws`` (batch + (L, D))."""
    ws = np.asarray(ws, dtype=np.float64)
    D = ws.shape[-1]
    out = np.empty(ws.shape[:-2] + (D,))
    for idx in np.ndindex(ws.shape[:-2]):
        out[idx] = beta_of(forward, ws[idx], D)
    return out


def conv_beta(ws):
    """beta of the conv net of eqs. (2)-(3) for ``ws`` of shape batch + (L, D)."""
    return _layered_beta(conv_net_forward, ws)


def diag_beta(ws):
    """beta of the diagonal net for ``ws`` of shape batch + (L, D)."""
    return _layered_beta(diag_net_forward, ws)


def full_beta(Ws):
    """beta of the fully connected net for layers ``W_l`` of shape batch_l + (D_{l-1}, D_l)
    (batch axes broadcast)."""
    Ws = [np.asarray(W, dtype=np.float64) for W in Ws]
    batch = np.broadcast_shapes(*[W.shape[:-2] for W in Ws])
    Ws = [np.broadcast_to(W, batch + W.shape[-2:]) for W in Ws]
    D = Ws[0].shape[-2]
    out = np.empty(batch + (D,))
    for idx in np.ndindex(batch):
        out[idx] = beta_of(full_net_forward, [W[idx] for W in Ws], D)
    return out


# --------------------------------------------------------------------------- derivatives


def jacobian_fd(fun, params, eps=1e-3):
    """Dense Jacobian ``J[i, j] = d fun(params)[i] / d params[j]`` by central differences.

    ``params``: flat float64 vector; ``fun`` maps it to a 1-D array.
    """
    params = np.asarray(params, dtype=np.float64).ravel()
    f0 = np.asarray(fun(params), dtype=np.float64).ravel()
    J = np.zeros((f0.size, params.size))
    for j in range(params.size):
        plus = params.copy()
        minus = params.copy()
        plus[j] += eps
        minus[j] -= eps
        J[:, j] = (np.asarray(fun(plus), dtype=np.float64).ravel()
                   - np.asarray(fun(minus), dtype=np.float64).ravel()) / (2 * eps)
    return J


# =========================================================================== GD
# Literal gradient descent (eq. 7) in the time domain: forward passes and
# backpropagation layer by layer from eqs. (1)-(3); the loss evaluated directly
# (fine for the short runs of the tests). The adaptive step follows the rule in
# the README ("Certified step sizes"), computed from time-domain quantities.

import math  # noqa: E402


# ----------------------------------------------------------------- networks


def conv_forward_backward(ws, X):
    """Outputs f(x_n) and gradients df/dw_l for each sample, by backprop through
    eq. (2) layer by layer: h_l[d] = sum_k w_l[k] h_{l-1}[(d + k) mod D]
    (gathered with the index table idx[d, k] = (d + k) mod D).
    Returns f (N,), grads (N, L, D)."""
    L, D = ws.shape
    idx = (np.arange(D)[:, None] + np.arange(D)[None, :]) % D
    hs = [np.asarray(X, float)]
    for l in range(L - 1):
        hs.append(hs[-1][:, idx] @ ws[l])  # eq. (2), every sample at once
    f = hs[-1] @ ws[L - 1]
    grads = np.zeros((X.shape[0], L, D))
    grads[:, L - 1] = hs[-1]
    delta = np.broadcast_to(ws[L - 1], hs[-1].shape).copy()  # df/dh_{L-1}
    for l in range(L - 2, -1, -1):
        # dh_l[d]/dw_l[k] = h_{l-1}[(d+k) mod D]
        grads[:, l] = np.einsum("nd,ndk->nk", delta, hs[l][:, idx])
        # dh_l[d]/dh_{l-1}[(d+k) mod D] = w_l[k]
        new = np.zeros_like(delta)
        for k in range(D):
            new += np.roll(delta, k, axis=1) * ws[l][k]
        delta = new
    return f, grads


def diag_forward_backward(ws, X):
    L, D = ws.shape
    N = X.shape[0]
    f = np.empty(N)
    grads = np.zeros((N, L, D))
    for n in range(N):
        hs = [X[n]]
        for l in range(L - 1):
            hs.append(ws[l] * hs[-1])
        f[n] = hs[-1] @ ws[L - 1]
        grads[n, L - 1] = hs[-1]
        delta = ws[L - 1].copy()
        for l in range(L - 2, -1, -1):
            grads[n, l] = delta * hs[l]
            delta = delta * ws[l]
    return f, grads


def full_forward_backward(Ws, X):
    """Eq. (1): h_l = W_l^T h_{l-1}. Returns f (N,), grads: list of (N, D_{l-1}, D_l)."""
    L = len(Ws)
    N = X.shape[0]
    f = np.empty(N)
    grads = [np.zeros((N,) + W.shape) for W in Ws]
    for n in range(N):
        hs = [X[n]]
        for l in range(L):
            hs.append(Ws[l].T @ hs[-1])
        f[n] = hs[-1][0]
        delta = np.ones(1)  # df/dh_L
        for l in range(L - 1, -1, -1):
            grads[l][n] = np.outer(hs[l], delta)
            delta = Ws[l] @ delta
    return f, grads


# ----------------------------------------------------------------- GD


def _smoothness(a, X2, Xh):
    L = len(a)
    g = sum(np.prod([a[j] for j in range(L) if j != l]) ** 2 for l in range(L))
    h = max((sum(np.prod([a[j] for j in range(L) if j not in (l, k)]) for k in range(L) if k != l)
             for l in range(L)), default=0.0)
    return X2 * g + Xh * h, math.sqrt(X2 * g)


def _loss(m, loss):
    if loss == "exp":
        return np.sum(np.exp(-m)), -np.exp(-m)  # L, dl/dm
    return np.sum(np.log1p(np.exp(-m))), -1.0 / (1.0 + np.exp(m))


def gd(X, y, arch, init, *, steps, loss="exp", step="fixed", step_size=1.0):
    """GD from ``init`` (conv/diag: (L, D); fc: list of matrices). Returns the list of
    iterates' predictors beta_t (t = 0..steps) and the final weights."""
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    D = X.shape[1]
    if arch == "fc":
        w = [np.array(W, float) for W in init]
        fb = full_forward_backward
        X2 = max(float(x @ x) for x in X)
        Xh = math.sqrt(X2)
        norms = lambda ws: [np.linalg.norm(W) for W in ws]
        flat = lambda ws: np.concatenate([W.ravel() for W in ws])
    else:
        w = np.array(init, float)
        fb = conv_forward_backward if arch == "conv" else diag_forward_backward
        X2 = max(float(x @ x) for x in X)
        if arch == "conv":
            Xh = float(np.max(np.abs(np.fft.fft(X, axis=1))))
            norms = lambda ws: [float(np.max(np.abs(np.fft.fft(v)))) for v in ws]
        else:
            Xh = float(np.max(np.abs(X)))
            norms = lambda ws: [float(np.max(np.abs(v))) for v in ws]
        flat = lambda ws: ws.ravel()

    def evaluate(ws):
        f, grads = fb(ws, X)
        m = y * f
        Lval, dl = _loss(m, loss)
        if arch == "fc":
            gw = [np.einsum("n,nij->ij", dl * y, g) for g in grads]
        else:
            gw = np.einsum("n,nld->ld", dl * y, grads)
        return Lval, gw, m

    def beta(ws):
        if arch == "fc":
            out = np.eye(D)
            for W in ws:
                out = out @ W
            return out[:, 0]
        f, _ = fb(ws, np.eye(D))
        return f

    betas = [beta(w)]
    Lval, gw, m = evaluate(w)
    for t in range(steps):
        if step == "fixed":
            eta = step_size
            w = [W - eta * G for W, G in zip(w, gw)] if arch == "fc" else w - eta * gw
        else:
            a = norms(w)
            S, _ = _smoothness(a, X2, Xh)
            eta = step_size / (Lval * S)
            gnorms = norms(gw)
            gflat = np.linalg.norm(flat(gw))
            while True:
                ab = [ai + eta * gi for ai, gi in zip(a, gnorms)]
                Sb, Gb = _smoothness(ab, X2, Xh)
                x = Gb * eta * gflat
                grow = 1.0 / (1.0 - x) if x < 0.5 else math.exp(x)
                if eta * Lval * Sb * grow < 1.999:
                    break
                eta *= 0.5
            while True:
                wn = [W - eta * G for W, G in zip(w, gw)] if arch == "fc" else w - eta * gw
                Ln, _, _ = evaluate(wn)
                if Ln <= Lval:
                    break
                eta *= 0.5
            w = wn
        Lval, gw, m = evaluate(w)
        betas.append(beta(w))
    return betas, w
