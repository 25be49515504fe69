"""Layer-wise elementwise products: the diagonal network, and the convolutional
network in the (half-spectrum) frequency domain.

Both networks compute ``beta = a_1 (.) a_2 (.) ... (.) a_L`` elementwise, on the
real weights for the diagonal network and on the complex half spectra
``rfft(w_l)`` for the convolutional one (Lemma 3). One code path serves both; the
kernels are generic over float32/float64/complex64/complex128.

* ``prod_layers(A)``          (B, L, K) -> (B, K)
* ``prod_layers_jvp(A, dA)``  sum_l dA_l * prod_{j != l} A_j        (forward mode)
* ``prod_layers_vjp(A, G)``   G * conj(prod_{j != l} A_j), per l   (B, L, K)

The ``*_into`` variants write ``scale`` times the result into a given C-contiguous
``out`` (the pyFFTW path writes the 1/D-scaled product straight into the inverse
transform's input buffer). ``scale`` is a real scalar of the arrays' precision
(``np.float32`` for float32/complex64, so nothing is promoted); it enters the
first factor of every product, so ``scale = 1`` reproduces the unscaled result
bit for bit.

No division anywhere: the "all but one" products come from prefix and suffix
products, so zeros in the weights are handled exactly.
"""

import numpy as np

from ._config import kernel


@kernel
def prod_layers_into(A, out, scale):
    B, L, K = A.shape
    for b in range(B):
        o = out[b]
        a0 = A[b, 0]
        for k in range(K):
            o[k] = a0[k] * scale
        for l in range(1, L):
            a = A[b, l]
            for k in range(K):
                o[k] *= a[k]


@kernel
def prod_layers_jvp_into(A, dA, out, scale, p):
    """``p`` is a work buffer of length K."""
    B, L, K = A.shape
    for b in range(B):
        o = out[b]
        a0 = A[b, 0]
        da0 = dA[b, 0]
        for k in range(K):
            p[k] = a0[k] * scale
            o[k] = da0[k] * scale
        for l in range(1, L):
            a = A[b, l]
            da = dA[b, l]
            for k in range(K):
                o[k] = o[k] * a[k] + p[k] * da[k]
                p[k] *= a[k]


@kernel
def prod_layers_vjp_into(A, G, out, scale, pre):
    """``pre`` is a work buffer of length K."""
    B, L, K = A.shape
    for b in range(B):
        # out[b, l] <- prod_{j > l} A_j  (suffix products, excluding l itself)
        last = out[b, L - 1]
        for k in range(K):
            last[k] = scale
        for l in range(L - 2, -1, -1):
            o = out[b, l]
            o1 = out[b, l + 1]
            a1 = A[b, l + 1]
            for k in range(K):
                o[k] = o1[k] * a1[k]
        # times prod_{j < l} A_j, conjugated, times G
        g = G[b]
        for k in range(K):
            pre[k] = 1.0
        for l in range(L):
            o = out[b, l]
            a = A[b, l]
            for k in range(K):
                o[k] = np.conj(o[k] * pre[k]) * g[k]
                pre[k] *= a[k]


@kernel
def _one(A):
    """1 as a real scalar of ``A``'s precision (float32 for complex64)."""
    return A.real.dtype.type(1.0)


@kernel
def prod_layers(A):
    B, L, K = A.shape
    out = np.empty((B, K), A.dtype)
    prod_layers_into(A, out, _one(A))
    return out


@kernel
def prod_layers_jvp(A, dA):
    B, L, K = A.shape
    out = np.empty((B, K), A.dtype)
    prod_layers_jvp_into(A, dA, out, _one(A), np.empty(K, A.dtype))
    return out


@kernel
def prod_layers_vjp(A, G):
    B, L, K = A.shape
    out = np.empty((B, L, K), A.dtype)
    prod_layers_vjp_into(A, G, out, _one(A), np.empty(K, A.dtype))
    return out
