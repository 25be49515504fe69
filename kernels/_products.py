"""Layer-wise elementwise products: the diagonal network, and the convolutional
network in the (half-spectrum) frequency domain.

Both networks compute ``beta = a_1 (.) a_2 (.) ... (.) a_L`` elementwise, on the
real weights for the diagonal network and on the complex half spectra
``rfft(w_l)`` for the convolutional one (Lemma 3). One code path serves both; the
kernels are generic over float32/float64/complex64/complex128.

* ``prod_layers(A)``          (B, L, K) -> (B, K)
* ``prod_layers_jvp(A, dA)``  sum_l dA_l * prod_{j != l} A_j        (forward mode)
* ``prod_layers_vjp(A, G)``   G * conj(prod_{j != l} A_j), per l   (B, L, K)

No division anywhere: the "all but one" products come from prefix and suffix
products, so zeros in the weights are handled exactly.
"""

import numpy as np

from ._config import kernel


@kernel
def prod_layers(A):
    B, L, K = A.shape
    out = np.empty((B, K), A.dtype)
    for b in range(B):
        for k in range(K):
            out[b, k] = A[b, 0, k]
        for l in range(1, L):
            for k in range(K):
                out[b, k] *= A[b, l, k]
    return out


@kernel
def prod_layers_jvp(A, dA):
    B, L, K = A.shape
    out = np.empty((B, K), A.dtype)
    p = np.empty(K, A.dtype)
    for b in range(B):
        for k in range(K):
            p[k] = A[b, 0, k]
            out[b, k] = dA[b, 0, k]
        for l in range(1, L):
            for k in range(K):
                out[b, k] = out[b, k] * A[b, l, k] + p[k] * dA[b, l, k]
                p[k] *= A[b, l, k]
    return out


@kernel
def prod_layers_vjp(A, G):
    B, L, K = A.shape
    out = np.empty((B, L, K), A.dtype)
    pre = np.empty(K, A.dtype)
    one = A.dtype.type(1.0)
    for b in range(B):
        # out[b, l] <- prod_{j > l} A_j  (suffix products, excluding l itself)
        for k in range(K):
            out[b, L - 1, k] = one
        for l in range(L - 2, -1, -1):
            for k in range(K):
                out[b, l, k] = out[b, l + 1, k] * A[b, l + 1, k]
        # times prod_{j < l} A_j, conjugated, times G
        for k in range(K):
            pre[k] = one
        for l in range(L):
            for k in range(K):
                out[b, l, k] = np.conj(out[b, l, k] * pre[k]) * G[b, k]
                pre[k] *= A[b, l, k]
    return out
