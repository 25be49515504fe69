"""Hypothesis property tests over random shapes, batch axes, backends and dtypes.

Weights are dyadic rationals k/16 with |k| <= 64: exact zeros, repeats and exact
cancellations are common (structural bugs show), and nothing under- or overflows.
Tolerances (see ``tolerances.py``) are relative to the *term magnitude* M, the map
evaluated on the absolute values of its inputs with the naive references:
float64 ``|got - ref| <= 1e-12 |ref| + 1e-12 M``; float32 the same with
``tol32(L, D) = 4 eps32 L sqrt(D)`` in place of 1e-12.

Scales of VJPs are the direct kernel's VJP of the absolute values (all terms
positive, so no cancellation; the direct kernel itself is held against the naive
nets in ``test_kernels.py``).

``deadline=None``: the first example of a new dtype/shape may compile (Numba) or
plan (FFTW).
"""

import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import naive
import tolerances as T
from fastbias import kernels as K

BACKENDS_ALL = K.BACKENDS + ("auto",)

dims = st.integers(1, 40)
depths = st.integers(1, 5)
backends = st.sampled_from(BACKENDS_ALL)
dtypes = st.sampled_from([np.float64, np.float32])
batches = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
two_batches = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3)
scalars = st.sampled_from([2.0, -2.0, 0.5, -0.25, 3.0, -1.5, 0.1, 1.0, -1.0])

# 30 examples per test keeps the suite quick; FASTBIAS_HYPOTHESIS_EXAMPLES=500 for a deep run.
SETTINGS = dict(deadline=None, max_examples=int(os.environ.get("FASTBIAS_HYPOTHESIS_EXAMPLES", "30")))


def dyadic(shape, dtype=np.float64):
    return hnp.arrays(dtype, shape, elements=st.integers(-64, 64).map(lambda k: k / 16.0))


def conv_M(ws):
    """Term magnitude of the conv predictor, per network: max(|w_1| (*) ... (*) |w_L|)."""
    return np.max(naive.conv_beta(np.abs(ws)), axis=-1, keepdims=True)


def conv_jvp_M(ws, dws):
    """Term magnitude of the conv JVP, sum_l |w_1| (*) .. |dw_l| .. (*) |w_L|, per network."""
    ws, dws = np.broadcast_arrays(np.abs(ws), np.abs(dws))
    total = 0.0
    for l in range(ws.shape[-2]):
        v = np.array(ws, dtype=np.float64)
        v[..., l, :] = dws[..., l, :]
        total = total + naive.conv_beta(v)
    return np.max(total, axis=-1, keepdims=True)


def check(got, ref, M, L, D, dtype):
    if np.dtype(dtype) == np.float64:
        T.assert_close64(got, ref, scale=M)
    else:
        T.assert_close32(got, ref, M, L, D)


# --------------------------------------------------------------------------- against the naive nets


@settings(**SETTINGS)
@given(data=st.data(), D=dims, L=depths, batch=batches, backend=backends, dtype=dtypes)
def test_pconv_matches_naive(data, D, L, batch, backend, dtype):
    ws = data.draw(dyadic(batch + (L, D), dtype), label="ws")
    beta = K.pconv(ws, backend=backend)
    check(beta, naive.conv_beta(ws), conv_M(ws), L, D, dtype)


@settings(**SETTINGS)
@given(data=st.data(), D=dims, L=depths, batch=batches, dtype=dtypes)
def test_pdiag_matches_naive(data, D, L, batch, dtype):
    ws = data.draw(dyadic(batch + (L, D), dtype), label="ws")
    check(K.pdiag(ws), naive.diag_beta(ws), naive.diag_beta(np.abs(ws)), L, 1, dtype)


@settings(**SETTINGS)
@given(data=st.data(), widths=st.lists(st.integers(1, 6), min_size=1, max_size=4), batch=batches, dtype=dtypes)
def test_pfull_matches_naive(data, widths, batch, dtype):
    widths = tuple(widths) + (1,)
    Ws = [data.draw(dyadic(batch + (widths[l], widths[l + 1]), dtype), label=f"W{l}") for l in range(len(widths) - 1)]
    M = np.max(naive.full_beta([np.abs(W) for W in Ws]), axis=-1, keepdims=True)
    check(K.pfull(Ws), naive.full_beta(Ws), M, len(Ws), max(widths), dtype)


@settings(**SETTINGS)
@given(data=st.data(), D=dims, shapes=two_batches, backend=backends)
def test_xcorr_matches_naive_and_is_adjoint_to_convolution(data, D, shapes, backend):
    (bh, bw), batch = shapes.input_shapes, shapes.result_shape
    h = data.draw(dyadic(bh + (D,)), label="h")
    w = data.draw(dyadic(bw + (D,)), label="w")
    out = K.xcorr(h, w, backend=backend)
    hb, wb = np.broadcast_to(h, batch + (D,)), np.broadcast_to(w, batch + (D,))
    ref = np.empty(batch + (D,))
    M = np.empty(batch + (1,))
    for i in np.ndindex(batch):
        ref[i] = naive.xcorr_naive(hb[i], wb[i])
        M[i] = np.max(naive.xcorr_naive(np.abs(hb[i]), np.abs(wb[i])))
    T.assert_close64(out, ref, scale=M)
    # <h (star) w, g> = <h, w (*) g>, and w (*) g is P_conv of the depth-2 net (w, g)
    g = data.draw(dyadic(batch + (D,)), label="g")
    lhs = np.sum(out * g, axis=-1)
    rhs = np.sum(hb * K.pconv(np.stack([wb, g], axis=-2), backend=backend), axis=-1)
    scale = np.sum(np.abs(ref * g), axis=-1) + np.sum(np.abs(hb) * naive.conv_beta(np.abs(np.stack([wb, g], -2))), -1)
    assert np.all(np.abs(lhs - rhs) <= T.TOL_ADJOINT * scale)


# --------------------------------------------------------------------------- derivatives


@settings(**SETTINGS)
@given(data=st.data(), D=dims, L=depths, shapes=two_batches, backend=backends)
def test_pconv_adjoint_identity(data, D, L, shapes, backend):
    (bw, bd), batch = shapes.input_shapes, shapes.result_shape
    ws = data.draw(dyadic(bw + (L, D)), label="ws")
    dws = data.draw(dyadic(bd + (L, D)), label="dws")
    g = data.draw(dyadic(bd + (D,)), label="g")
    jvp = K.pconv_jvp(ws, dws, backend=backend)
    vjp = K.pconv_vjp(ws, g, backend=backend)
    assert jvp.shape == batch + (D,) and vjp.shape == batch + (L, D)
    dwb = np.broadcast_to(dws, batch + (L, D))
    gb = np.broadcast_to(g, batch + (D,))
    lhs = np.sum(jvp * gb, axis=-1)
    rhs = np.sum(dwb * vjp, axis=(-2, -1))
    # scale: the terms of both inner products, with the term magnitudes of jvp and vjp
    Mj = conv_jvp_M(ws, dws)[..., 0]
    scale = Mj * np.sum(np.abs(gb), axis=-1) + np.sum(np.abs(dwb * vjp), axis=(-2, -1)) + np.abs(lhs)
    assert np.all(np.abs(lhs - rhs) <= T.TOL_ADJOINT * scale), (lhs, rhs)


@settings(**SETTINGS)
@given(data=st.data(), D=dims, L=depths, shapes=two_batches)
def test_pdiag_adjoint_identity(data, D, L, shapes):
    (bw, bd), batch = shapes.input_shapes, shapes.result_shape
    ws = data.draw(dyadic(bw + (L, D)), label="ws")
    dws = data.draw(dyadic(bd + (L, D)), label="dws")
    g = data.draw(dyadic(bd + (D,)), label="g")
    jvp, vjp = K.pdiag_jvp(ws, dws), K.pdiag_vjp(ws, g)
    dwb, gb = np.broadcast_to(dws, batch + (L, D)), np.broadcast_to(g, batch + (D,))
    lhs, rhs = np.sum(jvp * gb, axis=-1), np.sum(dwb * vjp, axis=(-2, -1))
    scale = np.sum(np.abs(K.pdiag_jvp(np.abs(ws), np.abs(dws)) * gb), axis=-1) + np.sum(np.abs(dwb * vjp), axis=(-2, -1))
    assert np.all(np.abs(lhs - rhs) <= T.TOL_ADJOINT * scale), (lhs, rhs)


@settings(**SETTINGS)
@given(data=st.data(), widths=st.lists(st.integers(1, 6), min_size=1, max_size=4), batch=batches)
def test_pfull_adjoint_identity(data, widths, batch):
    widths = tuple(widths) + (1,)
    Ws = [data.draw(dyadic(batch + (widths[l], widths[l + 1])), label=f"W{l}") for l in range(len(widths) - 1)]
    dWs = [data.draw(dyadic(batch + (widths[l], widths[l + 1])), label=f"dW{l}") for l in range(len(widths) - 1)]
    g = data.draw(dyadic(batch + (widths[0],)), label="g")
    jvp, vjp = K.pfull_jvp(Ws, dWs), K.pfull_vjp(Ws, g)
    lhs = np.sum(jvp * g, axis=-1)
    rhs = sum(np.sum(dW * V, axis=(-2, -1)) for dW, V in zip(dWs, vjp))
    absjvp = K.pfull_jvp([np.abs(W) for W in Ws], [np.abs(W) for W in dWs])
    scale = np.sum(absjvp * np.abs(g), axis=-1) + sum(np.sum(np.abs(dW * V), axis=(-2, -1)) for dW, V in zip(dWs, vjp))
    assert np.all(np.abs(lhs - rhs) <= T.TOL_ADJOINT * scale), (lhs, rhs)


@settings(**SETTINGS)
@given(data=st.data(), D=dims, L=depths, batch=batches, backend=backends, a=scalars, b=scalars)
def test_pconv_jvp_is_linear_in_dw(data, D, L, batch, backend, a, b):
    ws = data.draw(dyadic(batch + (L, D)), label="ws")
    dw1 = data.draw(dyadic(batch + (L, D)), label="dw1")
    dw2 = data.draw(dyadic(batch + (L, D)), label="dw2")
    got = K.pconv_jvp(ws, a * dw1 + b * dw2, backend=backend)
    ref = a * K.pconv_jvp(ws, dw1, backend=backend) + b * K.pconv_jvp(ws, dw2, backend=backend)
    M = abs(a) * conv_jvp_M(ws, dw1) + abs(b) * conv_jvp_M(ws, dw2)
    T.assert_close64(got, ref, scale=M)
    # Euler's identity for a map homogeneous of degree L: dP(w)[w] = L P(w)
    T.assert_close64(K.pconv_jvp(ws, ws, backend=backend), L * naive.conv_beta(ws), scale=L * conv_M(ws))


@settings(**SETTINGS)
@given(data=st.data(), D=dims, L=depths, batch=batches, a=scalars, b=scalars)
def test_pdiag_jvp_is_linear_in_dw(data, D, L, batch, a, b):
    ws = data.draw(dyadic(batch + (L, D)), label="ws")
    dw1 = data.draw(dyadic(batch + (L, D)), label="dw1")
    dw2 = data.draw(dyadic(batch + (L, D)), label="dw2")
    got = K.pdiag_jvp(ws, a * dw1 + b * dw2)
    ref = a * K.pdiag_jvp(ws, dw1) + b * K.pdiag_jvp(ws, dw2)
    M = abs(a) * K.pdiag_jvp(np.abs(ws), np.abs(dw1)) + abs(b) * K.pdiag_jvp(np.abs(ws), np.abs(dw2))
    T.assert_close64(got, ref, scale=M)
    T.assert_close64(K.pdiag_jvp(ws, ws), L * naive.diag_beta(ws), scale=L * naive.diag_beta(np.abs(ws)))


# --------------------------------------------------------------------------- symmetries


@settings(**SETTINGS)
@given(data=st.data(), D=dims, L=depths, batch=batches, backend=backends, c=scalars)
def test_pconv_homogeneity(data, D, L, batch, backend, c):
    """P(c w) = c^L P(w); JVP(c w, dw) = c^(L-1) JVP(w, dw); VJP(c w, g) = c^(L-1) VJP(w, g)."""
    ws = data.draw(dyadic(batch + (L, D)), label="ws")
    dws = data.draw(dyadic(batch + (L, D)), label="dws")
    g = data.draw(dyadic(batch + (D,)), label="g")
    M = conv_M(ws)
    T.assert_close64(K.pconv(c * ws, backend=backend), c**L * K.pconv(ws, backend=backend), scale=abs(c) ** L * M)
    Mj = conv_jvp_M(ws, dws)
    T.assert_close64(K.pconv_jvp(c * ws, dws, backend=backend), c ** (L - 1) * K.pconv_jvp(ws, dws, backend=backend),
                     scale=abs(c) ** (L - 1) * Mj)
    v = K.pconv_vjp(ws, g, backend=backend)
    Mv = np.max(np.abs(K.pconv_vjp(np.abs(ws), np.abs(g), backend="direct")), axis=(-2, -1), keepdims=True)
    T.assert_close64(K.pconv_vjp(c * ws, g, backend=backend), c ** (L - 1) * v, core=2, scale=abs(c) ** (L - 1) * Mv)


@settings(**SETTINGS)
@given(data=st.data(), D=dims, L=depths, batch=batches, c=scalars)
def test_pdiag_and_pfull_homogeneity(data, D, L, batch, c):
    ws = data.draw(dyadic(batch + (L, D)), label="ws")
    T.assert_close64(K.pdiag(c * ws), c**L * K.pdiag(ws), scale=abs(c) ** L * naive.diag_beta(np.abs(ws)))
    widths = (D,) + (3,) * (L - 1) + (1,)
    Ws = [data.draw(dyadic(batch + (widths[l], widths[l + 1])), label=f"W{l}") for l in range(L)]
    M = np.max(naive.full_beta([np.abs(W) for W in Ws]), axis=-1, keepdims=True)
    T.assert_close64(K.pfull([c * W for W in Ws]), c**L * K.pfull(Ws), scale=abs(c) ** L * M)


@settings(**SETTINGS)
@given(data=st.data(), D=dims, L=depths, batch=batches, backend=backends)
def test_layer_order_does_not_matter(data, D, L, batch, backend):
    """Circular convolution and elementwise products commute: permuting the layers,
    the output layer w_L included, leaves beta unchanged; JVP and VJP permute along."""
    ws = data.draw(dyadic(batch + (L, D)), label="ws")
    dws = data.draw(dyadic(batch + (L, D)), label="dws")
    g = data.draw(dyadic(batch + (D,)), label="g")
    perm = data.draw(st.permutations(range(L)), label="perm")
    wp, dwp = ws[..., perm, :], dws[..., perm, :]
    M = conv_M(ws)
    T.assert_close64(K.pconv(wp, backend=backend), K.pconv(ws, backend="direct"), scale=M)
    T.assert_close64(K.pconv_jvp(wp, dwp, backend=backend), K.pconv_jvp(ws, dws, backend="direct"),
                     scale=conv_jvp_M(ws, dws))
    Mv = np.max(np.abs(K.pconv_vjp(np.abs(ws), np.abs(g), backend="direct")), axis=(-2, -1), keepdims=True)
    T.assert_close64(K.pconv_vjp(wp, g, backend=backend), K.pconv_vjp(ws, g, backend="direct")[..., perm, :],
                     core=2, scale=Mv)
    Md = naive.diag_beta(np.abs(ws))
    T.assert_close64(K.pdiag(wp), K.pdiag(ws), scale=Md)
    T.assert_close64(K.pdiag_vjp(wp, g), K.pdiag_vjp(ws, g)[..., perm, :], core=2,
                     scale=np.max(np.abs(K.pdiag_vjp(np.abs(ws), np.abs(g))), axis=(-2, -1), keepdims=True))


@settings(**SETTINGS)
@given(data=st.data(), D=dims, batch=batches, backend=backends)
def test_depth_one_is_the_identity(data, D, batch, backend):
    w = data.draw(dyadic(batch + (1, D)), label="w")
    dw = data.draw(dyadic(batch + (1, D)), label="dw")
    g = data.draw(dyadic(batch + (D,)), label="g")
    scale = np.max(np.abs(w[..., 0, :]), axis=-1, keepdims=True)
    T.assert_close64(K.pconv(w, backend=backend), w[..., 0, :], scale=scale)
    T.assert_close64(K.pconv_jvp(w, dw, backend=backend), dw[..., 0, :],
                     scale=np.max(np.abs(dw[..., 0, :]), axis=-1, keepdims=True))
    T.assert_close64(K.pconv_vjp(w, g, backend=backend), g[..., None, :], core=2,
                     scale=np.max(np.abs(g), axis=-1, keepdims=True)[..., None])
    np.testing.assert_array_equal(K.pdiag(w), w[..., 0, :])
    np.testing.assert_array_equal(K.pdiag_vjp(w, g), g[..., None, :])
