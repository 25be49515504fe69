"""Slow, literal gradient descent (eq. 7) in the time domain, plain NumPy.

Independent of fastbias: forward passes and backpropagation written layer by
layer from eqs. (1)-(3); the loss evaluated directly (fine for the short runs of
the tests). The adaptive step follows the rule documented in the README
("Certified step sizes"), computed here from time-domain quantities.
"""

import math

import numpy as np


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
