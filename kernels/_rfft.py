"""In-kernel FFT path: numpy.fft inside @njit (provided by rocket-fft).

Usable from other jitted code (e.g. compiled GD loops) with no Python in
between. The convolution theorem with numpy's unnormalized DFT ``F``:
``F(conv(a, b)) = F(a) F(b)`` and ``F(xcorr(h, w)) = F(h) conj(F(w))``.
"""

import numpy as np

from ._config import kernel
from ._products import prod_layers, prod_layers_jvp, prod_layers_vjp


@kernel
def xcorr_rfft(h, w):
    D = h.shape[-1]
    H = np.fft.rfft(h, axis=-1)
    W = np.fft.rfft(w, axis=-1)
    return np.fft.irfft(H * np.conj(W), D, axis=-1)


@kernel
def pconv_rfft(ws):
    D = ws.shape[-1]
    return np.fft.irfft(prod_layers(np.fft.rfft(ws, axis=-1)), D, axis=-1)


@kernel
def pconv_jvp_rfft(ws, dws):
    D = ws.shape[-1]
    W = np.fft.rfft(ws, axis=-1)
    dW = np.fft.rfft(dws, axis=-1)
    return np.fft.irfft(prod_layers_jvp(W, dW), D, axis=-1)


@kernel
def pconv_vjp_rfft(ws, g):
    D = ws.shape[-1]
    W = np.fft.rfft(ws, axis=-1)
    G = np.fft.rfft(g, axis=-1)
    return np.fft.irfft(prod_layers_vjp(W, G), D, axis=-1)
