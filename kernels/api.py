"""Public, validated predictor maps of the paper's parameterizations.

Conventions (each verified in ``tests/test_kernels.py`` against the literal,
layer-by-layer networks in ``tests/naive.py``; see the README's math section):

* Eq. (2), circular cross-correlation: ``xcorr(h, w)[d] = sum_k w[k] h[(d+k) mod D]``.
* Conv net, eqs. (2)-(3), ``ws = (w_1, ..., w_L)``, ``w_L`` the fully connected
  output layer: ``beta = P_conv(w) = w_1 (*) w_2 (*) ... (*) w_L`` with ``(*)`` the
  circular *convolution* ``(a (*) b)[m] = sum_k a[k] b[(m-k) mod D]`` (the adjoint
  of ``h -> xcorr(h, w)`` is ``g -> w (*) g``). With the paper's unitary DFT
  ``z_hat[d] = D^{-1/2} sum_p z[p] exp(-2 pi i p d / D)``:
  ``beta_hat = D^{(L-1)/2} * w_hat_1 * w_hat_2 * ... * w_hat_L`` (elementwise).
  Lemma 3 drops the constant ``D^{(L-1)/2}``; the paper's flipped-filter formula
  ``w_1^flip * ... * w_L`` with ``w^flip[k] = w[D-k-1]`` is *not* ``beta`` as the
  network is written (it gives a reflected, shifted beta); see the README.
* Diagonal net: ``beta = w_1 (.) w_2 (.) ... (.) w_L`` (elementwise).
* Fully connected net, eq. (1): ``beta = W_1 W_2 ... W_L`` with ``W_l`` of shape
  ``(D_{l-1}, D_l)``, ``D_0 = D``, ``D_L = 1``.

Shapes: ``ws``/``dws`` are ``(..., L, D)``, ``g`` and every predictor ``(..., D)``;
leading batch axes broadcast between arguments. float32 and float64 are
computed in their own precision (mixed inputs promote to float64).
"""

import numpy as np

from . import _direct, _fftw, _rfft
from ._products import prod_layers, prod_layers_jvp, prod_layers_vjp
from ._full import pfull_flat, pfull_jvp_flat, pfull_vjp_flat
from ._validate import (
    as_batched,
    as_float_array,
    broadcast_batch,
    check_backend,
)

BACKENDS = ("direct", "rfft", "fftw")
"""Conv variants: ``direct`` (O(D^2) Numba), ``rfft`` (numpy.fft inside Numba,
usable in jitted loops), ``fftw`` (pyFFTW plans, for large D)."""

# Crossovers measured by benchmarks/bench_kernels.py (see README): below
# AUTO_DIRECT_MAX_D the direct loops win, above AUTO_RFFT_MAX_D pyFFTW wins.
AUTO_DIRECT_MAX_D = 32
AUTO_RFFT_MAX_D = 256

_XCORR = {"direct": _direct.xcorr_direct, "rfft": _rfft.xcorr_rfft, "fftw": _fftw.xcorr_fftw}
_PCONV = {"direct": _direct.pconv_direct, "rfft": _rfft.pconv_rfft, "fftw": _fftw.pconv_fftw}
_PCONV_JVP = {"direct": _direct.pconv_jvp_direct, "rfft": _rfft.pconv_jvp_rfft, "fftw": _fftw.pconv_jvp_fftw}
_PCONV_VJP = {"direct": _direct.pconv_vjp_direct, "rfft": _rfft.pconv_vjp_rfft, "fftw": _fftw.pconv_vjp_fftw}


def choose_backend(D):
    """The conv backend that ``backend="auto"`` uses for signals of length ``D``."""
    if D <= AUTO_DIRECT_MAX_D:
        return "direct"
    if D <= AUTO_RFFT_MAX_D:
        return "rfft"
    return "fftw"


def _backend(backend, D):
    check_backend(backend, ("auto",) + BACKENDS)
    return choose_backend(D) if backend == "auto" else backend


def _layers(ws, name="ws"):
    ws = as_float_array(ws, name, min_ndim=2)
    return ws


def _promote(*arrays):
    return np.result_type(*arrays)


def _check_same_core(name_a, a, name_b, b, ncore):
    if a.shape[a.ndim - ncore:] != b.shape[b.ndim - ncore:]:
        what = "(L, D)" if ncore == 2 else "D"
        raise ValueError(
            f"{name_b} must have the same {what} as {name_a}: got {b.shape[b.ndim - ncore:]} "
            f"and {a.shape[a.ndim - ncore:]}"
        )


def _check_signal(ws, g, name="g"):
    if g.shape[-1] != ws.shape[-1]:
        raise ValueError(f"{name} must have length D = {ws.shape[-1]} in its last axis, got shape {g.shape}")


# --------------------------------------------------------------------------- xcorr


def xcorr(h, w, *, backend="auto"):
    """Circular cross-correlation of eq. (2): ``out[d] = sum_k w[k] h[(d + k) mod D]``.

    Parameters
    ----------
    h : array_like, shape (..., D)
        Signal (the layer input ``h_{l-1}``).
    w : array_like, shape (..., D)
        Full-width filter ``w_l``. Batch axes broadcast against ``h``.
    backend : {"auto", "direct", "rfft", "fftw"}

    Returns
    -------
    ndarray, shape (..., D), dtype float32 or float64
    """
    h = as_float_array(h, "h")
    w = as_float_array(w, "w")
    if h.shape[-1] != w.shape[-1]:
        raise ValueError(f"h and w must have the same length D, got {h.shape[-1]} and {w.shape[-1]}")
    D = h.shape[-1]
    batch = broadcast_batch("h", h, 1, "w", w, 1)
    dt = _promote(h, w)
    out = _XCORR[_backend(backend, D)](as_batched(h, batch, (D,), dt), as_batched(w, batch, (D,), dt))
    return out.reshape(batch + (D,))


# --------------------------------------------------------------------------- conv


def pconv(ws, *, backend="auto"):
    """Predictor ``beta = P_conv(w)`` of the depth-L circular conv net, eqs. (2)-(3).

    ``f_w(x) = <x, beta>`` for the network evaluated layer by layer as written:
    ``beta = w_1 (*) ... (*) w_L`` (circular convolution), equivalently
    ``beta_hat = D^{(L-1)/2} prod_l w_hat_l`` with the unitary DFT.

    Parameters
    ----------
    ws : array_like, shape (..., L, D)
        Rows ``w_1 .. w_{L-1}`` are the conv filters, ``w_L`` the output layer.
    backend : {"auto", "direct", "rfft", "fftw"}

    Returns
    -------
    ndarray, shape (..., D)
    """
    ws = _layers(ws)
    batch, (L, D) = ws.shape[:-2], ws.shape[-2:]
    out = _PCONV[_backend(backend, D)](as_batched(ws, batch, (L, D), ws.dtype))
    return out.reshape(batch + (D,))


def pconv_jvp(ws, dws, *, backend="auto"):
    """Jacobian-vector product ``dP_conv(w)[dw] = sum_l w_1 (*) .. dw_l .. (*) w_L``.

    ``ws``, ``dws``: shape (..., L, D) (batch axes broadcast). Returns (..., D).
    """
    ws = _layers(ws)
    dws = _layers(dws, "dws")
    _check_same_core("ws", ws, "dws", dws, 2)
    L, D = ws.shape[-2:]
    batch = broadcast_batch("ws", ws, 2, "dws", dws, 2)
    dt = _promote(ws, dws)
    out = _PCONV_JVP[_backend(backend, D)](as_batched(ws, batch, (L, D), dt), as_batched(dws, batch, (L, D), dt))
    return out.reshape(batch + (D,))


def pconv_vjp(ws, g, *, backend="auto"):
    """Vector-Jacobian product: the gradient of ``<P_conv(w), g>`` w.r.t. each ``w_l``,
    ``xcorr(g, w_1 (*) .. [l omitted] .. (*) w_L)``.

    ``ws``: (..., L, D); ``g``: (..., D) (batch axes broadcast). Returns (..., L, D).
    """
    ws = _layers(ws)
    g = as_float_array(g, "g")
    _check_signal(ws, g)
    L, D = ws.shape[-2:]
    batch = broadcast_batch("ws", ws, 2, "g", g, 1)
    dt = _promote(ws, g)
    out = _PCONV_VJP[_backend(backend, D)](as_batched(ws, batch, (L, D), dt), as_batched(g, batch, (D,), dt))
    return out.reshape(batch + (L, D))


# --------------------------------------------------------------------------- diag


def pdiag(ws):
    """Predictor of the depth-L diagonal network (Section 5):
    ``beta = w_1 (.) w_2 (.) ... (.) w_L``.

    ``ws``: (..., L, D). Returns (..., D).
    """
    ws = _layers(ws)
    batch, (L, D) = ws.shape[:-2], ws.shape[-2:]
    return prod_layers(as_batched(ws, batch, (L, D), ws.dtype)).reshape(batch + (D,))


def pdiag_jvp(ws, dws):
    """``sum_l dw_l (.) prod_{j != l} w_j``; shapes (..., L, D) -> (..., D)."""
    ws = _layers(ws)
    dws = _layers(dws, "dws")
    _check_same_core("ws", ws, "dws", dws, 2)
    L, D = ws.shape[-2:]
    batch = broadcast_batch("ws", ws, 2, "dws", dws, 2)
    dt = _promote(ws, dws)
    out = prod_layers_jvp(as_batched(ws, batch, (L, D), dt), as_batched(dws, batch, (L, D), dt))
    return out.reshape(batch + (D,))


def pdiag_vjp(ws, g):
    """Gradient of ``<P_diag(w), g>``: ``g (.) prod_{j != l} w_j`` per layer; -> (..., L, D)."""
    ws = _layers(ws)
    g = as_float_array(g, "g")
    _check_signal(ws, g)
    L, D = ws.shape[-2:]
    batch = broadcast_batch("ws", ws, 2, "g", g, 1)
    dt = _promote(ws, g)
    out = prod_layers_vjp(as_batched(ws, batch, (L, D), dt), as_batched(g, batch, (D,), dt))
    return out.reshape(batch + (L, D))


# --------------------------------------------------------------------------- full


def _full_layers(Ws, name="Ws"):
    if isinstance(Ws, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of matrices W_l, got a {type(Ws).__name__}")
    if isinstance(Ws, np.ndarray):
        if Ws.ndim < 3:
            raise ValueError(
                f"{name} must be a sequence of matrices W_l of shape (..., D_(l-1), D_l); "
                f"got one array of shape {Ws.shape}"
            )
        Ws = list(Ws)
    try:
        Ws = list(Ws)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of matrices W_l, got {type(Ws).__name__}") from None
    if len(Ws) == 0:
        raise ValueError(f"{name} has no layers: depth L must be >= 1")
    mats = [as_float_array(W, f"{name}[{l}]", min_ndim=2) for l, W in enumerate(Ws)]
    for l in range(len(mats) - 1):
        if mats[l].shape[-1] != mats[l + 1].shape[-2]:
            raise ValueError(
                f"widths do not chain: {name}[{l}] has shape {mats[l].shape[-2:]} but "
                f"{name}[{l + 1}] has shape {mats[l + 1].shape[-2:]} (need D_{l + 1} to match)"
            )
    if mats[-1].shape[-1] != 1:
        raise ValueError(
            f"the output layer {name}[{len(mats) - 1}] must have width D_L = 1, got shape {mats[-1].shape[-2:]}"
        )
    return mats


def _full_batch(name, mats, extra=()):
    shapes = [m.shape[:-2] for m in mats] + list(extra)
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"batch axes of the layers of {name} do not broadcast: {shapes}") from None


def _pack(mats, batch, dt):
    widths = np.array([mats[0].shape[-2]] + [m.shape[-1] for m in mats], dtype=np.int64)
    sizes = widths[:-1] * widths[1:]
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    B = int(np.prod(batch, dtype=np.int64))
    theta = np.empty((B, int(offsets[-1])), dtype=dt)
    for l, m in enumerate(mats):
        theta[:, offsets[l]:offsets[l + 1]] = np.broadcast_to(m, batch + m.shape[-2:]).reshape(B, -1)
    return theta, widths, offsets


def pfull(Ws):
    """Predictor of the fully connected deep linear network, eq. (1):
    ``beta = W_1 W_2 ... W_L``.

    Parameters
    ----------
    Ws : sequence of array_like
        ``W_l`` of shape (..., D_{l-1}, D_l), ``D_0 = D``, ``D_L = 1``; batch axes broadcast.

    Returns
    -------
    ndarray, shape (..., D)
    """
    mats = _full_layers(Ws)
    batch = _full_batch("Ws", mats)
    theta, widths, offsets = _pack(mats, batch, _promote(*mats))
    return pfull_flat(theta, widths, offsets).reshape(batch + (int(widths[0]),))


def pfull_jvp(Ws, dWs):
    """``sum_l W_1 .. dW_l .. W_L``; ``dWs`` shaped like ``Ws``. Returns (..., D)."""
    mats = _full_layers(Ws)
    dmats = _full_layers(dWs, "dWs")
    if len(dmats) != len(mats):
        raise ValueError(f"dWs must have as many layers as Ws: got {len(dmats)} and {len(mats)}")
    for l, (m, dm) in enumerate(zip(mats, dmats)):
        if m.shape[-2:] != dm.shape[-2:]:
            raise ValueError(f"dWs[{l}] must have shape {m.shape[-2:]} like Ws[{l}], got {dm.shape[-2:]}")
    batch = _full_batch("Ws and dWs", mats + dmats)
    dt = _promote(*mats, *dmats)
    theta, widths, offsets = _pack(mats, batch, dt)
    dtheta, _, _ = _pack(dmats, batch, dt)
    return pfull_jvp_flat(theta, dtheta, widths, offsets).reshape(batch + (int(widths[0]),))


def pfull_vjp(Ws, g):
    """Gradient of ``<P_full(W), g>`` w.r.t. each ``W_l``:
    ``(W_{l-1}^T .. W_1^T g) (W_{l+1} .. W_L)^T``.

    Returns a list of arrays shaped ``batch + (D_{l-1}, D_l)``.
    """
    mats = _full_layers(Ws)
    g = as_float_array(g, "g")
    D = mats[0].shape[-2]
    if g.shape[-1] != D:
        raise ValueError(f"g must have length D = {D} in its last axis, got shape {g.shape}")
    batch = _full_batch("Ws and g", mats, (g.shape[:-1],))
    dt = _promote(*mats, g)
    theta, widths, offsets = _pack(mats, batch, dt)
    flat = pfull_vjp_flat(theta, as_batched(g, batch, (D,), dt), widths, offsets)
    return [
        flat[:, offsets[l]:offsets[l + 1]].reshape(batch + (int(widths[l]), int(widths[l + 1])))
        for l in range(len(mats))
    ]
