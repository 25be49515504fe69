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

import math
import threading

import numpy as np

from . import _direct, _fftw, _rfft
from ._products import prod_layers, prod_layers_jvp, prod_layers_vjp
from ._full import pfull_flat, pfull_jvp_flat, pfull_vjp_flat
from ._validate import (
    as_batched,
    as_float_array,
    batched_pair,
    check_choice,
    check_finite,
    copy_finite,
    raise_not_finite,
)

BACKENDS = ("direct", "rfft", "fftw")
"""Conv variants: ``direct`` (O(D^2) Numba), ``rfft`` (numpy.fft inside Numba,
usable in jitted loops), ``fftw`` (pyFFTW plans, for large D)."""

# Crossovers, from ``python benchmarks/kernel_ratios.py --sizes
# 16,32,48,64,72,80,88,96,112,128,192,256,384,512,1024,2048,4096`` (raw kernels, one
# network per call, float64, L in {2, 4}; 2 shared cores; see the README):
# * direct is the fastest through D = 80, ties with fftw at 88, and fftw wins
#   from 96 on (the crossover fell at D = 84-91 in three runs).
# * For one network, fftw is 1.1-1.5x faster than rfft at every D >= 64. On
#   batches of 4 or 16 networks, though, rfft (numpy.fft inside Numba, which
#   transforms several rows at once) ties or beats fftw by up to 1.25x from D = 96
#   to 512, and fftw wins again from D = 1024 (same kernels, (B, L, D) inputs,
#   geometric mean over ops and L). So rfft keeps the middle band; above it, fftw.
AUTO_DIRECT_MAX_D = 80
AUTO_RFFT_MAX_D = 512

_ALLOWED = ("auto",) + BACKENDS

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
    if type(backend) is not str:
        backend = str(check_choice(backend, "backend", _ALLOWED))  # raises unless a str subclass
    if backend == "auto":
        return choose_backend(D)
    if backend not in BACKENDS:
        check_choice(backend, "backend", _ALLOWED)  # raises
    return backend


def _layers(ws, name="ws"):
    return as_float_array(ws, name, min_ndim=2)


def _promote(*arrays):
    dt = arrays[0].dtype
    for a in arrays[1:]:
        if a.dtype is not dt:
            return np.result_type(*arrays)
    return dt


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
    D = h.shape[-1]
    if w.shape[-1] != D:
        raise ValueError(f"h and w must have the same length D, got {h.shape[-1]} and {w.shape[-1]}")
    core = (D,)
    batch, h, w = batched_pair("h", h, core, "w", w, core)
    out = _XCORR[_backend(backend, D)](h, w)
    return out.reshape(batch + core)


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
    shape = ws.shape
    batch = shape[:-2]
    out = _PCONV[_backend(backend, shape[-1])](as_batched(ws, batch, shape[-2:], ws.dtype))
    return out.reshape(batch + shape[-1:])


def pconv_jvp(ws, dws, *, backend="auto"):
    """Jacobian-vector product ``dP_conv(w)[dw] = sum_l w_1 (*) .. dw_l .. (*) w_L``.

    ``ws``, ``dws``: shape (..., L, D) (batch axes broadcast). Returns (..., D).
    """
    ws = _layers(ws)
    dws = _layers(dws, "dws")
    core = ws.shape[-2:]
    if dws.shape[-2:] != core:
        _check_same_core("ws", ws, "dws", dws, 2)
    batch, ws, dws = batched_pair("ws", ws, core, "dws", dws, core)
    out = _PCONV_JVP[_backend(backend, core[1])](ws, dws)
    return out.reshape(batch + core[1:])


def pconv_vjp(ws, g, *, backend="auto"):
    """Vector-Jacobian product: the gradient of ``<P_conv(w), g>`` w.r.t. each ``w_l``,
    ``xcorr(g, w_1 (*) .. [l omitted] .. (*) w_L)``.

    ``ws``: (..., L, D); ``g``: (..., D) (batch axes broadcast). Returns (..., L, D).
    """
    ws = _layers(ws)
    g = as_float_array(g, "g")
    _check_signal(ws, g)
    core = ws.shape[-2:]
    batch, ws, g = batched_pair("ws", ws, core, "g", g, core[1:])
    out = _PCONV_VJP[_backend(backend, core[1])](ws, g)
    return out.reshape(batch + core)


# --------------------------------------------------------------------------- diag


def pdiag(ws):
    """Predictor of the depth-L diagonal network (Section 5):
    ``beta = w_1 (.) w_2 (.) ... (.) w_L``.

    ``ws``: (..., L, D). Returns (..., D).
    """
    ws = _layers(ws)
    shape = ws.shape
    batch = shape[:-2]
    return prod_layers(as_batched(ws, batch, shape[-2:], ws.dtype)).reshape(batch + shape[-1:])


def pdiag_jvp(ws, dws):
    """``sum_l dw_l (.) prod_{j != l} w_j``; shapes (..., L, D) -> (..., D)."""
    ws = _layers(ws)
    dws = _layers(dws, "dws")
    core = ws.shape[-2:]
    if dws.shape[-2:] != core:
        _check_same_core("ws", ws, "dws", dws, 2)
    batch, ws, dws = batched_pair("ws", ws, core, "dws", dws, core)
    return prod_layers_jvp(ws, dws).reshape(batch + core[1:])


def pdiag_vjp(ws, g):
    """Gradient of ``<P_diag(w), g>``: ``g (.) prod_{j != l} w_j`` per layer; -> (..., L, D)."""
    ws = _layers(ws)
    g = as_float_array(g, "g")
    _check_signal(ws, g)
    core = ws.shape[-2:]
    batch, ws, g = batched_pair("ws", ws, core, "g", g, core[1:])
    return prod_layers_vjp(ws, g).reshape(batch + core)


# --------------------------------------------------------------------------- full


def _layer_list(Ws, name):
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
    return Ws


def _full_layers(Ws, name="Ws", finite=True):
    """The validated layers and their widths ``(D_0, ..., D_L)``; ``finite=False``
    leaves the NaN/inf checks to ``_pack``."""
    Ws = _layer_list(Ws, name)
    mats = [as_float_array(W, name, min_ndim=2, index=l, finite=finite) for l, W in enumerate(Ws)]
    widths = [mats[0].shape[-2]]
    for l, m in enumerate(mats):
        if m.shape[-2] != widths[l]:
            raise ValueError(
                f"widths do not chain: {name}[{l - 1}] has shape {mats[l - 1].shape[-2:]} but "
                f"{name}[{l}] has shape {m.shape[-2:]} (need D_{l} to match)"
            )
        widths.append(m.shape[-1])
    if widths[-1] != 1:
        raise ValueError(
            f"the output layer {name}[{len(mats) - 1}] must have width D_L = 1, got shape {mats[-1].shape[-2:]}"
        )
    return mats, tuple(widths)


def _full_batch(name, mats, extra=()):
    shapes = [m.shape[:-2] for m in mats] + list(extra)
    first = shapes[0]
    for s in shapes:
        if s != first:
            break
    else:
        return first
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(f"batch axes of the layers of {name} do not broadcast: {shapes}") from None


def _one_shot(x):
    """A generator (or other one-pass iterable) of layers as a list, so that its
    checks can run twice; anything else as it is."""
    if isinstance(x, (list, tuple, np.ndarray, str, bytes)):
        return x
    try:
        return list(x)
    except TypeError:
        return x  # not iterable: ``_layer_list`` says so, in its turn


def _checked(inputs, *args):
    """``inputs(*args, finite=False)``: every check but NaN/inf, which ``_pack`` does
    while copying. If a check fails, the checks run again with finiteness, in the
    documented order, so that the error raised is the first one in that order."""
    try:
        return inputs(*args, finite=False)
    except (TypeError, ValueError) as exc:
        err = exc
    inputs(*args, finite=True)  # raises the first error in the documented order
    raise err


_LAYOUTS = {}  # widths -> (widths, offsets) as int64 arrays (read only by the kernels), offsets as ints


def _layout(key):
    layout = _LAYOUTS.get(key)
    if layout is None:
        offs = [0]
        for a, b in zip(key[:-1], key[1:]):
            offs.append(offs[-1] + a * b)
        layout = (np.array(key, np.int64), np.array(offs, np.int64), offs)
        if len(_LAYOUTS) >= 256:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return layout


SCRATCH_MAX_BYTES = 64 << 20
_scratch = threading.local()


def _scratch_rows(B, P, dt, slot):
    """A (B, P) array of ``dt`` in this thread's packing buffer for ``slot`` (0:
    the layers, 1: their tangents), reused by the next call: the kernels only read
    it and nothing returned aliases it. A fresh multi-megabyte array per call
    costs more in page faults than the kernel itself (glibc returns freed large
    blocks to the system). Above ``SCRATCH_MAX_BYTES`` a fresh array is used."""
    n = B * P
    if n * dt.itemsize > SCRATCH_MAX_BYTES:
        return np.empty((B, P), dtype=dt)
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    key = (slot, dt.char)
    buf = bufs.get(key)
    if buf is None or buf.shape[0] < n:
        buf = bufs[key] = np.empty(n, dtype=dt)
    return buf[:n].reshape(B, P)


def _pack(mats, key, batch, dt, name, slot=0):
    """The layers in the flat layout of ``_full``: ``theta`` (B, P) plus ``widths``,
    ``offsets`` (int64 arrays) and the offsets as Python ints. One copy of each
    layer, which also checks it for NaN/inf (a ValueError naming ``name[l]``).
    ``key`` is the tuple of widths from ``_full_layers``; ``theta`` lives in the
    scratch buffer ``slot`` (see ``_scratch_rows``)."""
    widths, offsets, offs = _layout(key)
    if not batch:  # every layer unbatched: copy (and check) each into one row
        theta = _scratch_rows(1, offs[-1], dt, slot)
        row = theta[0]
        for l, m in enumerate(mats):
            if not copy_finite(row[offs[l]:offs[l + 1]], m.ravel()):
                raise_not_finite(name, l)
        return theta, widths, offsets, offs
    for l, m in enumerate(mats):
        check_finite(m, name, l)
    B = math.prod(batch)
    theta = _scratch_rows(B, offs[-1], dt, slot)
    for l, m in enumerate(mats):
        n = offs[l + 1] - offs[l]
        if m.shape[:-2] != batch:
            m = np.broadcast_to(m, batch + m.shape[-2:])
        theta[:, offs[l]:offs[l + 1]] = m.reshape(B, n)
    return theta, widths, offsets, offs


def _pfull_inputs(Ws, finite):
    mats, key = _full_layers(Ws, "Ws", finite)
    return mats, key, _full_batch("Ws", mats)


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
    mats, key, batch = _checked(_pfull_inputs, _one_shot(Ws))
    theta, widths, offsets, _ = _pack(mats, key, batch, _promote(*mats), "Ws")
    return pfull_flat(theta, widths, offsets).reshape(batch + key[:1])


def _pfull_jvp_inputs(Ws, dWs, finite):
    mats, key = _full_layers(Ws, "Ws", finite)
    dmats, _ = _full_layers(dWs, "dWs", finite)
    if len(dmats) != len(mats):
        raise ValueError(f"dWs must have as many layers as Ws: got {len(dmats)} and {len(mats)}")
    for l, (m, dm) in enumerate(zip(mats, dmats)):
        if m.shape[-2:] != dm.shape[-2:]:
            raise ValueError(f"dWs[{l}] must have shape {m.shape[-2:]} like Ws[{l}], got {dm.shape[-2:]}")
    return mats, dmats, key, _full_batch("Ws and dWs", mats + dmats)


def pfull_jvp(Ws, dWs):
    """``sum_l W_1 .. dW_l .. W_L``; ``dWs`` shaped like ``Ws``. Returns (..., D)."""
    mats, dmats, key, batch = _checked(_pfull_jvp_inputs, _one_shot(Ws), _one_shot(dWs))
    dt = _promote(*mats, *dmats)
    theta, widths, offsets, _ = _pack(mats, key, batch, dt, "Ws")
    dtheta = _pack(dmats, key, batch, dt, "dWs", slot=1)[0]
    return pfull_jvp_flat(theta, dtheta, widths, offsets).reshape(batch + key[:1])


def _pfull_vjp_inputs(Ws, g, finite):
    mats, key = _full_layers(Ws, "Ws", finite)
    g = as_float_array(g, "g", finite=finite)
    D = key[0]
    if g.shape[-1] != D:
        raise ValueError(f"g must have length D = {D} in its last axis, got shape {g.shape}")
    return mats, key, g, _full_batch("Ws and g", mats, (g.shape[:-1],))


def pfull_vjp(Ws, g):
    """Gradient of ``<P_full(W), g>`` w.r.t. each ``W_l``:
    ``(W_{l-1}^T .. W_1^T g) (W_{l+1} .. W_L)^T``.

    Returns a list of arrays shaped ``batch + (D_{l-1}, D_l)``.
    """
    mats, key, g, batch = _checked(_pfull_vjp_inputs, _one_shot(Ws), g)
    dt = _promote(*mats, g)
    theta, widths, offsets, offs = _pack(mats, key, batch, dt, "Ws")
    check_finite(g, "g")
    flat = pfull_vjp_flat(theta, as_batched(g, batch, key[:1], dt), widths, offsets)
    return [
        flat[:, offs[l]:offs[l + 1]].reshape(batch + m.shape[-2:])
        for l, m in enumerate(mats)
    ]
