"""Every kernel variant held against the literal networks of ``naive.py``.

Tolerances are stated once, with their reasons, in ``tolerances.py``:

* float64: ``|got - ref| <= 1e-12 |ref| + 1e-12 max|ref|`` per network (pdiag and
  pfull: ``+ 1e-12 M``, with M their term magnitude, elementwise for pdiag);
* float32: output dtype float32, ``|got - ref| <= t |ref| + t M`` with
  ``t = 4 eps32 L sqrt(D)`` and ``M`` the term magnitude (the map on |inputs|);
* JVP/VJP vs central differences (exact for these multilinear maps up to
  rounding): ``1e-9`` of the term magnitude ``|J| |dw|`` (``|J|^T |g|``);
* adjoint identity: ``1e-12`` of ``sum |jvp g| + sum |dw vjp|``.
"""

import concurrent.futures
import functools

import numpy as np
import pytest

import naive
import tolerances as T
from fastbias import kernels as K

BACKENDS_ALL = K.BACKENDS + ("auto",)
SIZES = (1, 2, 7, 12, 13, 16, 33, 64)  # trivial, even, odd/prime, powers of two, 3*11
DEPTHS = (1, 2, 3, 4, 5)
BATCHES = ((), (3, 2))


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


# --------------------------------------------------------------------------- cached references


@functools.lru_cache(maxsize=None)
def conv_case(D, L, batch, dtype="float64"):
    """(ws, naive beta, term magnitude M per network) for the conv net."""
    ws = np.random.default_rng([D, L, len(batch), *batch, 7]).standard_normal(batch + (L, D)).astype(dtype)
    ref = naive.conv_beta(ws)
    M = np.max(naive.conv_beta(np.abs(ws)), axis=-1, keepdims=True)
    return _frozen(ws, ref, M)


@functools.lru_cache(maxsize=None)
def diag_case(D, L, batch, dtype="float64"):
    ws = np.random.default_rng([D, L, len(batch), *batch, 11]).standard_normal(batch + (L, D)).astype(dtype)
    ref = naive.diag_beta(ws)
    M = naive.diag_beta(np.abs(ws))  # elementwise: exactly the magnitude of each product
    return _frozen(ws, ref, M)


# --------------------------------------------------------------------------- naive self-checks


def test_naive_xcorr_by_hand():
    h = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(naive.xcorr_naive(h, [1.0, 0.0, 0.0]), h)
    # w = e_1: out[d] = h[d + 1]
    np.testing.assert_array_equal(naive.xcorr_naive(h, [0.0, 1.0, 0.0]), [2.0, 3.0, 1.0])
    # out[0] = 1*1 + 10*2 + 100*3
    assert naive.xcorr_naive(h, [1.0, 10.0, 100.0])[0] == 321.0
    # conv: (a (*) b)[m] = sum_k a[k] b[m - k]; with a = e_1 it shifts b right by one
    np.testing.assert_array_equal(naive.conv_naive([0.0, 1.0, 0.0], h), [3.0, 1.0, 2.0])
    np.testing.assert_array_equal(naive.flip([1.0, 2.0, 3.0, 4.0]), [4.0, 3.0, 2.0, 1.0])
    np.testing.assert_array_equal(naive.shift(h, 1), [3.0, 1.0, 2.0])


def test_naive_beta_of_is_per_unit_vector():
    rng = np.random.default_rng(0)
    D, L = 6, 3
    ws = rng.standard_normal((L, D))
    beta = naive.beta_of(naive.conv_net_forward, ws, D)
    one_at_a_time = [naive.conv_net_forward(ws, np.eye(D)[i]) for i in range(D)]
    np.testing.assert_array_equal(beta, one_at_a_time)
    x = rng.standard_normal(D)
    assert abs(naive.conv_net_forward(ws, x) - x @ beta) <= 1e-12 * np.sum(np.abs(x * beta))


def test_naive_conv_net_depth_two_by_hand():
    # L = 2, D = 2: f(x) = <x (star) w_1, w_2>; x (star) w_1 = [w10 x0 + w11 x1, w10 x1 + w11 x0]
    w1, w2 = np.array([1.0, 2.0]), np.array([3.0, 5.0])
    beta = naive.beta_of(naive.conv_net_forward, np.stack([w1, w2]), 2)
    np.testing.assert_array_equal(beta, [1 * 3 + 2 * 5, 2 * 3 + 1 * 5])


def test_naive_full_and_diag_by_hand():
    W1 = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    W2 = np.array([[7.0], [11.0]])
    np.testing.assert_array_equal(naive.beta_of(naive.full_net_forward, [W1, W2], 3), (W1 @ W2)[:, 0])
    ws = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_array_equal(naive.beta_of(naive.diag_net_forward, ws, 2), [15.0, 48.0])


def test_naive_jacobian_fd_of_a_known_map():
    A = np.random.default_rng(1).standard_normal((4, 3))
    J = naive.jacobian_fd(lambda p: A @ p + p[0] * p[1], np.array([0.5, -1.0, 2.0]), eps=1e-3)
    expected = A.copy()
    expected[:, 0] += -1.0
    expected[:, 1] += 0.5
    np.testing.assert_allclose(J, expected, rtol=1e-10, atol=1e-10)


def test_naive_unitary_dft_is_the_unitary_fft():
    z = np.random.default_rng(2).standard_normal(9)
    np.testing.assert_allclose(naive.unitary_dft(z), np.fft.fft(z) / 3.0, rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------- P_conv


@pytest.mark.parametrize("backend", BACKENDS_ALL)
@pytest.mark.parametrize("batch", BATCHES, ids=str)
@pytest.mark.parametrize("L", DEPTHS)
@pytest.mark.parametrize("D", SIZES)
def test_pconv_matches_network(D, L, batch, backend):
    ws, ref, _ = conv_case(D, L, batch)
    T.assert_close64(K.pconv(ws, backend=backend), ref, err_msg=f"pconv D={D} L={L} {backend}")


@pytest.mark.parametrize("backend", BACKENDS_ALL)
@pytest.mark.parametrize("batch", BATCHES, ids=str)
@pytest.mark.parametrize("L", DEPTHS)
@pytest.mark.parametrize("D", SIZES)
def test_pconv_float32(D, L, batch, backend):
    ws, ref, M = conv_case(D, L, batch, "float32")
    T.assert_close32(K.pconv(ws, backend=backend), ref, M, L, D, err_msg=f"pconv f32 D={D} L={L} {backend}")


@pytest.mark.parametrize("backend", BACKENDS_ALL)
def test_pconv_array_likes_and_layouts(backend):
    ws, ref, _ = conv_case(12, 3, (3, 2))
    # nested lists, Fortran order, a strided view, a size-1 batch axis
    T.assert_close64(K.pconv(ws.tolist(), backend=backend), ref)
    T.assert_close64(K.pconv(np.asfortranarray(ws), backend=backend), ref)
    wide = np.zeros(ws.shape[:-1] + (2 * ws.shape[-1],))
    wide[..., ::2] = ws
    T.assert_close64(K.pconv(wide[..., ::2], backend=backend), ref)
    T.assert_close64(K.pconv(ws[None], backend=backend), ref[None])
    T.assert_close64(K.pconv(ws[:, :, None], backend=backend), ref[:, :, None])


def test_pconv_mixed_precision_promotes():
    ws32 = conv_case(7, 3, ())[0].astype(np.float32)
    dws = np.ones((3, 7))
    assert K.pconv_jvp(ws32, dws).dtype == np.float64
    assert K.pconv_vjp(ws32, np.ones(7)).dtype == np.float64
    assert K.xcorr(ws32[0], np.ones(7)).dtype == np.float64
    assert K.pdiag_jvp(ws32, dws).dtype == np.float64
    assert K.pfull([np.ones((7, 1), np.float32)]).dtype == np.float32
    assert K.pfull([np.ones((7, 2), np.float32), np.ones((2, 1))]).dtype == np.float64


@pytest.mark.parametrize("D", (31, 32, 33, 255, 256, 257))
def test_auto_dispatches_to_choose_backend(D):
    assert K.choose_backend(1) == "direct"
    assert K.choose_backend(K.AUTO_DIRECT_MAX_D) == "direct"
    assert K.choose_backend(K.AUTO_DIRECT_MAX_D + 1) == "rfft"
    assert K.choose_backend(K.AUTO_RFFT_MAX_D) == "rfft"
    assert K.choose_backend(K.AUTO_RFFT_MAX_D + 1) == "fftw"
    rng = np.random.default_rng(D)
    ws, dws, g = rng.standard_normal((2, 3, D)), rng.standard_normal((2, 3, D)), rng.standard_normal(D)
    b = K.choose_backend(D)
    np.testing.assert_array_equal(K.pconv(ws), K.pconv(ws, backend=b))
    np.testing.assert_array_equal(K.pconv_jvp(ws, dws), K.pconv_jvp(ws, dws, backend=b))
    np.testing.assert_array_equal(K.pconv_vjp(ws, g), K.pconv_vjp(ws, g, backend=b))
    np.testing.assert_array_equal(K.xcorr(g, ws[0, 0]), K.xcorr(g, ws[0, 0], backend=b))


@pytest.mark.parametrize("backend", K.BACKENDS)
def test_kernels_do_not_modify_inputs(backend):
    rng = np.random.default_rng(3)
    ws, dws, g = rng.standard_normal((2, 3, 16)), rng.standard_normal((2, 3, 16)), rng.standard_normal(16)
    copies = [ws.copy(), dws.copy(), g.copy()]
    K.pconv(ws, backend=backend)
    K.pconv_jvp(ws, dws, backend=backend)
    K.pconv_vjp(ws, g, backend=backend)
    K.xcorr(g, ws[0, 0], backend=backend)
    K.pdiag(ws), K.pdiag_jvp(ws, dws), K.pdiag_vjp(ws, g)
    Ws = [ws[0, :, :4].T.copy(), dws[0, :, :1].copy()]
    Ws_copy = [W.copy() for W in Ws]
    K.pfull(Ws), K.pfull_jvp(Ws, Ws), K.pfull_vjp(Ws, g[:4])
    for a, b in zip([ws, dws, g] + Ws, copies + Ws_copy):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", K.BACKENDS)
def test_overflow_shows_up_as_inf_or_nan(backend):
    # fastmath without nnan/ninf: a diverging computation must stay visible
    ws = np.full((3, 8), 1e120)
    assert not np.all(np.isfinite(K.pconv(ws, backend=backend)))
    assert not np.all(np.isfinite(K.pconv_jvp(ws, ws, backend=backend)))
    assert not np.all(np.isfinite(K.pconv_vjp(ws, np.full(8, 1e120), backend=backend)))
    assert not np.all(np.isfinite(K.pdiag(ws)))
    assert not np.all(np.isfinite(K.pfull([np.full((8, 8), 1e200), np.full((8, 1), 1e200)])))


# --------------------------------------------------------------------------- xcorr


@pytest.mark.parametrize("backend", BACKENDS_ALL)
@pytest.mark.parametrize("D", SIZES)
def test_xcorr_matches_eq2(D, backend):
    rng = np.random.default_rng([D, 5])
    h, w = rng.standard_normal((3, D)), rng.standard_normal((3, D))
    ref = np.array([naive.xcorr_naive(h[i], w[i]) for i in range(3)])
    T.assert_close64(K.xcorr(h, w, backend=backend), ref)
    T.assert_close64(K.xcorr(h[0], w[0], backend=backend), ref[0])
    h32, w32 = h.astype(np.float32), w.astype(np.float32)
    ref32 = np.array([naive.xcorr_naive(h32[i], w32[i]) for i in range(3)])
    M = np.max([naive.xcorr_naive(np.abs(h32[i]), np.abs(w32[i])) for i in range(3)], axis=-1)[:, None]
    T.assert_close32(K.xcorr(h32, w32, backend=backend), ref32, M, 2, D)


@pytest.mark.parametrize("backend", BACKENDS_ALL)
def test_xcorr_broadcasts_batch_axes(backend):
    rng = np.random.default_rng(6)
    D = 13
    h, w = rng.standard_normal((3, 1, D)), rng.standard_normal((2, D))
    out = K.xcorr(h, w, backend=backend)
    assert out.shape == (3, 2, D)
    ref = np.array([[naive.xcorr_naive(h[i, 0], w[j]) for j in range(2)] for i in range(3)])
    T.assert_close64(out, ref)
    out = K.xcorr(h[0, 0], w, backend=backend)  # unbatched h against a batch of filters
    T.assert_close64(out, ref[0])


# --------------------------------------------------------------------------- P_diag


@pytest.mark.parametrize("batch", BATCHES, ids=str)
@pytest.mark.parametrize("L", DEPTHS)
@pytest.mark.parametrize("D", SIZES)
def test_pdiag_matches_network(D, L, batch):
    ws, ref, M = diag_case(D, L, batch)
    T.assert_close64(K.pdiag(ws), ref, scale=M)
    ws32, ref32, M32 = diag_case(D, L, batch, "float32")
    T.assert_close32(K.pdiag(ws32), ref32, M32, L, 1)


# --------------------------------------------------------------------------- P_full

CHAINS = (
    (5, 1),  # depth 1
    (5, 3, 1),
    (5, 7, 2, 1),
    (1, 1),
    (1, 4, 1),
    (6, 1, 3, 1),  # width-1 bottleneck in the middle
    (4, 4, 4, 4, 1),
    (3, 8, 8, 2, 5, 1),
)


def _full_layers(widths, batch=(), dtype="float64", seed=0):
    rng = np.random.default_rng([seed, len(batch), *batch, *widths])
    return [rng.standard_normal(batch + (widths[l], widths[l + 1])).astype(dtype) for l in range(len(widths) - 1)]


@pytest.mark.parametrize("batch", BATCHES, ids=str)
@pytest.mark.parametrize("widths", CHAINS, ids=str)
def test_pfull_matches_network(widths, batch):
    Ws = _full_layers(widths, batch)
    ref = naive.full_beta(Ws)
    M = naive.full_beta([np.abs(W) for W in Ws])
    T.assert_close64(K.pfull(Ws), ref, scale=np.max(M, axis=-1, keepdims=True))
    Ws32 = [W.astype(np.float32) for W in Ws]
    ref32 = naive.full_beta(Ws32)
    M32 = np.max(naive.full_beta([np.abs(W) for W in Ws32]), axis=-1, keepdims=True)
    T.assert_close32(K.pfull(Ws32), ref32, M32, len(Ws), max(widths))


def test_pfull_broadcasts_batch_axes_between_layers():
    rng = np.random.default_rng(8)
    Ws = [rng.standard_normal((3, 1, 5, 7)), rng.standard_normal((2, 7, 2)), rng.standard_normal((2, 1))]
    out = K.pfull(Ws)
    assert out.shape == (3, 2, 5)
    ref = naive.full_beta(Ws)
    T.assert_close64(out, ref)
    # tuples and generators of layers are sequences too
    T.assert_close64(K.pfull(tuple(Ws)), ref)
    T.assert_close64(K.pfull(W for W in Ws), ref)


# --------------------------------------------------------------------------- JVP / VJP vs finite differences

FD_CONV = [(1, 1), (1, 3), (2, 2), (5, 1), (5, 2), (5, 3), (8, 4), (7, 5)]


def _check_jvp_vjp(J, jvp, vjp, dw, g):
    """jvp == J dw and vjp == J^T g, relative to the term magnitudes |J||dw| and |J|^T|g|."""
    sj = np.max(np.abs(J) @ np.abs(dw))
    sv = np.max(np.abs(J).T @ np.abs(g))
    T.assert_scaled(jvp, J @ dw, T.TOL_FD, T.TOL_FD * sj, "JVP vs central differences")
    T.assert_scaled(vjp, J.T @ g, T.TOL_FD, T.TOL_FD * sv, "VJP vs central differences")


@pytest.mark.parametrize("backend", BACKENDS_ALL)
@pytest.mark.parametrize("D, L", FD_CONV)
def test_pconv_jvp_vjp_match_central_differences(D, L, backend):
    rng = np.random.default_rng([D, L, 13])
    B = 2
    ws, dws, g = rng.standard_normal((B, L, D)), rng.standard_normal((B, L, D)), rng.standard_normal((B, D))
    jvp = K.pconv_jvp(ws, dws, backend=backend)
    vjp = K.pconv_vjp(ws, g, backend=backend)
    assert jvp.shape == (B, D) and vjp.shape == (B, L, D)
    for b in range(B):
        J = naive.jacobian_fd(lambda p: naive.conv_beta(p.reshape(L, D)), ws[b].ravel(), T.FD_STEP)
        _check_jvp_vjp(J, jvp[b], vjp[b].ravel(), dws[b].ravel(), g[b])


@pytest.mark.parametrize("D, L", FD_CONV)
def test_pdiag_jvp_vjp_match_central_differences(D, L):
    rng = np.random.default_rng([D, L, 17])
    B = 2
    ws, dws, g = rng.standard_normal((B, L, D)), rng.standard_normal((B, L, D)), rng.standard_normal((B, D))
    jvp, vjp = K.pdiag_jvp(ws, dws), K.pdiag_vjp(ws, g)
    assert jvp.shape == (B, D) and vjp.shape == (B, L, D)
    for b in range(B):
        J = naive.jacobian_fd(lambda p: naive.diag_beta(p.reshape(L, D)), ws[b].ravel(), T.FD_STEP)
        _check_jvp_vjp(J, jvp[b], vjp[b].ravel(), dws[b].ravel(), g[b])


def test_pdiag_jvp_vjp_with_zero_weights():
    # no division by w anywhere: zeros in the weights are exact
    ws = np.array([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0], [5.0, 7.0, 0.0]])
    dws = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    g = np.array([1.0, 1.0, 1.0])
    J = naive.jacobian_fd(lambda p: naive.diag_beta(p.reshape(3, 3)), ws.ravel(), T.FD_STEP)
    np.testing.assert_allclose(K.pdiag_jvp(ws, dws), J @ dws.ravel(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(K.pdiag_vjp(ws, g).ravel(), J.T @ g, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(K.pdiag_vjp(ws, g), [[15.0, 0.0, 0.0], [0.0, 14.0, 0.0], [0.0, 0.0, 0.0]])


def _flat_full(Ws):
    return np.concatenate([np.asarray(W).ravel() for W in Ws])


def _unflat_full(p, widths):
    out, o = [], 0
    for l in range(len(widths) - 1):
        n = widths[l] * widths[l + 1]
        out.append(p[o:o + n].reshape(widths[l], widths[l + 1]))
        o += n
    return out


@pytest.mark.parametrize("widths", CHAINS, ids=str)
def test_pfull_jvp_vjp_match_central_differences(widths):
    B = 2
    Ws = _full_layers(widths, (B,), seed=1)
    dWs = _full_layers(widths, (B,), seed=2)
    g = np.random.default_rng(list(widths)).standard_normal((B, widths[0]))
    jvp = K.pfull_jvp(Ws, dWs)
    vjp = K.pfull_vjp(Ws, g)
    assert jvp.shape == (B, widths[0])
    assert [V.shape for V in vjp] == [(B,) + W.shape[-2:] for W in Ws]
    for b in range(B):
        Wb = [W[b] for W in Ws]
        J = naive.jacobian_fd(lambda p: naive.full_beta(_unflat_full(p, widths)), _flat_full(Wb), T.FD_STEP)
        _check_jvp_vjp(J, jvp[b], _flat_full([V[b] for V in vjp]), _flat_full([W[b] for W in dWs]), g[b])


@pytest.mark.parametrize("backend", BACKENDS_ALL)
def test_pconv_jvp_vjp_broadcast_batch_axes(backend):
    rng = np.random.default_rng(19)
    L, D = 3, 6
    ws, dws, g = rng.standard_normal((2, 1, L, D)), rng.standard_normal((3, L, D)), rng.standard_normal((3, D))
    jvp = K.pconv_jvp(ws, dws, backend=backend)
    vjp = K.pconv_vjp(ws, g, backend=backend)
    assert jvp.shape == (2, 3, D) and vjp.shape == (2, 3, L, D)
    for i in range(2):
        for j in range(3):
            T.assert_close64(jvp[i, j], K.pconv_jvp(ws[i, 0], dws[j], backend="direct"))
            T.assert_close64(vjp[i, j], K.pconv_vjp(ws[i, 0], g[j], backend="direct"), core=2)
    # unbatched g against batched ws, and unbatched ws against batched dws / g
    T.assert_close64(K.pconv_vjp(ws, g[0], backend=backend)[:, 0], vjp[:, 0], core=2)
    T.assert_close64(K.pconv_jvp(ws[1, 0], dws, backend=backend), jvp[1])
    T.assert_close64(K.pconv_vjp(ws[1, 0], g, backend=backend), vjp[1], core=2)


def test_pdiag_jvp_vjp_broadcast_batch_axes():
    rng = np.random.default_rng(20)
    L, D = 3, 6
    ws, dws, g = rng.standard_normal((2, 1, L, D)), rng.standard_normal((3, L, D)), rng.standard_normal((3, D))
    jvp, vjp = K.pdiag_jvp(ws, dws), K.pdiag_vjp(ws, g)
    assert jvp.shape == (2, 3, D) and vjp.shape == (2, 3, L, D)
    for i in range(2):
        for j in range(3):
            J = naive.jacobian_fd(lambda p: naive.diag_beta(p.reshape(L, D)), ws[i, 0].ravel(), T.FD_STEP)
            _check_jvp_vjp(J, jvp[i, j], vjp[i, j].ravel(), dws[j].ravel(), g[j])
    T.assert_close64(K.pdiag_jvp(ws[1, 0], dws), jvp[1])
    T.assert_close64(K.pdiag_vjp(ws[1, 0], g), vjp[1], core=2)


def test_pfull_jvp_vjp_broadcast_batch_axes():
    widths = (4, 3, 1)
    rng = np.random.default_rng(21)
    Ws = [rng.standard_normal((2, 1, 4, 3)), rng.standard_normal((3, 1))]
    dWs = [rng.standard_normal((3, 4, 3)), rng.standard_normal((3, 1))]
    g = rng.standard_normal((3, 4))
    jvp, vjp = K.pfull_jvp(Ws, dWs), K.pfull_vjp(Ws, g)
    assert jvp.shape == (2, 3, 4)
    assert [V.shape for V in vjp] == [(2, 3, 4, 3), (2, 3, 3, 1)]
    for i in range(2):
        Wi = [Ws[0][i, 0], Ws[1]]
        J = naive.jacobian_fd(lambda p: naive.full_beta(_unflat_full(p, widths)), _flat_full(Wi), T.FD_STEP)
        for j in range(3):
            _check_jvp_vjp(J, jvp[i, j], _flat_full([V[i, j] for V in vjp]),
                           _flat_full([dWs[0][j], dWs[1]]), g[j])
    # unbatched layers against a batch of cotangents
    V = K.pfull_vjp([Ws[0][0, 0], Ws[1]], g)
    assert [v.shape for v in V] == [(3, 4, 3), (3, 3, 1)]
    for v, ref in zip(V, vjp):
        T.assert_close64(v, ref[0], core=2)


# --------------------------------------------------------------------------- adjoint identity


def _assert_adjoint(jvp, g, dws, vjp):
    lhs, rhs = float(np.sum(jvp * g)), float(np.sum(dws * vjp))
    scale = T.adjoint_scale(jvp, g, dws, vjp)
    assert abs(lhs - rhs) <= T.TOL_ADJOINT * scale, (lhs, rhs, scale)


@pytest.mark.parametrize("backend", BACKENDS_ALL)
@pytest.mark.parametrize("D, L", [(1, 1), (2, 4), (13, 3), (64, 5), (100, 2), (1000, 3)])
def test_pconv_adjoint_identity(D, L, backend):
    rng = np.random.default_rng([D, L, 23])
    ws, dws, g = rng.standard_normal((L, D)), rng.standard_normal((L, D)), rng.standard_normal(D)
    _assert_adjoint(K.pconv_jvp(ws, dws, backend=backend), g, dws, K.pconv_vjp(ws, g, backend=backend))


@pytest.mark.parametrize("D, L", [(1, 1), (2, 4), (13, 3), (64, 5), (1000, 3)])
def test_pdiag_adjoint_identity(D, L):
    rng = np.random.default_rng([D, L, 29])
    ws, dws, g = rng.standard_normal((L, D)), rng.standard_normal((L, D)), rng.standard_normal(D)
    _assert_adjoint(K.pdiag_jvp(ws, dws), g, dws, K.pdiag_vjp(ws, g))


@pytest.mark.parametrize("widths", CHAINS + ((50, 30, 20, 1),), ids=str)
def test_pfull_adjoint_identity(widths):
    Ws, dWs = _full_layers(widths, seed=3), _full_layers(widths, seed=4)
    g = np.random.default_rng(list(widths)).standard_normal(widths[0])
    vjp = K.pfull_vjp(Ws, g)
    _assert_adjoint(K.pfull_jvp(Ws, dWs), g, _flat_full(dWs), _flat_full(vjp))


# --------------------------------------------------------------------------- the paper's conventions


@pytest.mark.parametrize("L", DEPTHS)
@pytest.mark.parametrize("D", (1, 2, 7, 12, 16))
def test_convention_a_unitary_dft(D, L):
    """beta_hat = D^{(L-1)/2} prod_l w_hat_l with the paper's unitary DFT (literal sums)."""
    ws, ref, _ = conv_case(D, L, ())
    w_hat = [naive.unitary_dft(w) for w in ws]
    rhs = D ** ((L - 1) / 2) * np.prod(w_hat, axis=0)
    for beta in [ref] + [K.pconv(ws, backend=b) for b in K.BACKENDS]:
        lhs = naive.unitary_dft(beta)
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12 * np.max(np.abs(lhs)))


@pytest.mark.parametrize("L", DEPTHS)
@pytest.mark.parametrize("D", (1, 2, 7, 12, 16))
def test_convention_b_circular_convolution(D, L):
    """beta = w_1 (*) w_2 (*) ... (*) w_L, (a (*) b)[m] = sum_k a[k] b[(m - k) mod D]."""
    ws, ref, _ = conv_case(D, L, ())
    left = ws[0].astype(np.float64)
    for l in range(1, L):
        left = naive.conv_naive(left, ws[l])  # left-associated; convolution is associative
    right = ws[L - 1].astype(np.float64)
    for l in range(L - 2, -1, -1):
        right = naive.conv_naive(ws[l], right)
    T.assert_close64(left, ref)
    T.assert_close64(right, ref)
    T.assert_close64(K.pconv(ws), left)


def paper_flipped_formula(ws):
    """The paper's literal P_conv(w) = w_1^flip (star) w_2^flip (star) ... (star) w_{L-1}^flip (star) w_L,
    with (star) = eq. (2) applied left-associated as written, w^flip[k] = w[D-k-1]."""
    L = len(ws)
    if L == 1:
        return np.asarray(ws[0], dtype=np.float64)
    acc = naive.flip(ws[0])
    for l in range(1, L - 1):
        acc = naive.xcorr_naive(acc, naive.flip(ws[l]))
    return naive.xcorr_naive(acc, ws[L - 1])


def _reflect(z):
    """``(R z)[k] = z[(-k) mod D]``."""
    D = len(z)
    return np.array([z[(-k) % D] for k in range(D)])


def test_convention_c_flipped_formula_is_not_beta():
    """The paper's flipped-filter formula is not the network's beta.

    Derivation (``R z[k] = z[-k]``, ``T_s z[k] = z[k - s]``, indices mod D): eq. (2) is
    ``a (star) b = a (*) R b``; ``w^flip = T_{-1} R w``, so ``R w^flip = T_1 w``; R and
    T_s distribute over ``(*)`` and shifts commute with it. Hence, for L >= 2,

        P_flip = T_{L-3} (R w_1 (*) w_2 (*) ... (*) w_{L-1} (*) R w_L)
               = [ P_net(w_1, w_2^flip, ..., w_{L-1}^flip, w_L) ]^flip.

    So for L = 2 it is the flipped beta, ``P_flip[k] = beta[D - 1 - k]``; for L = 3 it is
    the flipped beta of the net whose middle filter is flipped. For L >= 3 it is not
    even a function of beta (two nets with the same beta give different P_flip). For
    L = 1 it is w_1 = beta. (For D = 2, R is the identity and P_flip = T_{L-3} beta,
    which equals beta for odd L: the one degenerate case.)
    """
    rng = np.random.default_rng(31)
    for D in (2, 3, 5, 8):
        # L = 1: agrees
        w = rng.standard_normal((1, D))
        np.testing.assert_array_equal(paper_flipped_formula(w), naive.conv_beta(w))
        for L in (2, 3, 4, 5):
            ws = rng.standard_normal((L, D))
            beta = naive.conv_beta(ws)
            P = paper_flipped_formula(ws)
            tol = dict(rtol=1e-12, atol=1e-12 * np.max(np.abs(P)))
            # the shift/reflection form
            acc = _reflect(ws[0])
            for l in range(1, L - 1):
                acc = naive.conv_naive(acc, ws[l])
            acc = naive.conv_naive(acc, _reflect(ws[L - 1]))
            np.testing.assert_allclose(P, naive.shift(acc, L - 3), **tol)
            # the flipped-beta form
            twisted = np.stack([ws[0]] + [naive.flip(w) for w in ws[1:-1]] + [ws[-1]])
            np.testing.assert_allclose(P, naive.flip(naive.conv_beta(twisted)), **tol)
            if L == 2:
                np.testing.assert_allclose(P, naive.flip(beta), **tol)
            if D == 2:
                np.testing.assert_allclose(P, naive.shift(beta, L - 3), **tol)
                assert np.allclose(P, beta, **tol) == (L % 2 == 1)
            else:
                assert not np.allclose(P, beta, rtol=1e-3, atol=1e-3)
                if L >= 3:
                    assert not np.allclose(P, naive.flip(beta), rtol=1e-3, atol=1e-3)
        # L = 3, not a function of beta: shift w_2 by +1 and w_3 by -1, beta is unchanged
        ws = rng.standard_normal((3, D))
        beta = naive.conv_beta(ws)
        ws2 = np.stack([ws[0], naive.shift(ws[1], 1), naive.shift(ws[2], -1)])
        np.testing.assert_allclose(naive.conv_beta(ws2), beta, rtol=1e-12, atol=1e-12 * np.max(np.abs(beta)))
        # P_flip(ws2) = T_2 P_flip(ws) (from the shift/reflection form), which differs for D > 2
        P, P2 = paper_flipped_formula(ws), paper_flipped_formula(ws2)
        np.testing.assert_allclose(P2, naive.shift(P, 2), rtol=1e-12, atol=1e-12 * np.max(np.abs(P)))
        assert np.allclose(P2, P, rtol=1e-3, atol=1e-3) == (D <= 2)


@pytest.mark.parametrize("L", DEPTHS)
@pytest.mark.parametrize("D", (1, 2, 7, 12))
def test_convention_d_lemma3_literally(D, L):
    """Lemma 3 without its constant, beta_hat = prod_l w_hat_l, holds only for L = 1 (or D = 1);
    otherwise it is off by exactly the factor D^{(L-1)/2}."""
    ws, _, _ = conv_case(D, L, ())
    beta = K.pconv(ws)
    lhs = naive.unitary_dft(beta)
    literal = np.prod([naive.unitary_dft(w) for w in ws], axis=0)
    holds = np.allclose(lhs, literal, rtol=1e-10, atol=1e-10 * np.max(np.abs(lhs)))
    assert holds == (L == 1 or D == 1)
    np.testing.assert_allclose(lhs, D ** ((L - 1) / 2) * literal, rtol=1e-12, atol=1e-12 * np.max(np.abs(lhs)))


# --------------------------------------------------------------------------- time domain == frequency domain

TF_SIZES = (1, 2, 3, 5, 8, 17, 31, 32, 33, 100, 127, 128, 255, 256, 257, 1000, 1024)


def _time_vs_frequency(D, L, B, seed):
    rng = np.random.default_rng([D, L, seed])
    ws, dws = rng.standard_normal((B, L, D)), rng.standard_normal((B, L, D))
    g, h = rng.standard_normal((B, D)), rng.standard_normal((B, D))
    ref = {
        "pconv": K.pconv(ws, backend="direct"),
        "jvp": K.pconv_jvp(ws, dws, backend="direct"),
        "vjp": K.pconv_vjp(ws, g, backend="direct"),
        "xcorr": K.xcorr(h, ws[:, 0], backend="direct"),
    }
    for backend in ("rfft", "fftw"):
        T.assert_close64(K.pconv(ws, backend=backend), ref["pconv"], err_msg=f"pconv {backend} D={D}")
        T.assert_close64(K.pconv_jvp(ws, dws, backend=backend), ref["jvp"], err_msg=f"jvp {backend} D={D}")
        T.assert_close64(K.pconv_vjp(ws, g, backend=backend), ref["vjp"], core=2, err_msg=f"vjp {backend} D={D}")
        T.assert_close64(K.xcorr(h, ws[:, 0], backend=backend), ref["xcorr"], err_msg=f"xcorr {backend} D={D}")


@pytest.mark.parametrize("L", (1, 2, 4))
@pytest.mark.parametrize("D", TF_SIZES)
def test_time_domain_equals_frequency_domain(D, L):
    _time_vs_frequency(D, L, 2, 37)


@pytest.mark.parametrize("L", (2, 3))
def test_time_domain_equals_frequency_domain_4096(L):
    _time_vs_frequency(4096, L, 1, 41)


@pytest.mark.parametrize("backend", K.BACKENDS)
@pytest.mark.parametrize("D", (1000, 4096))
def test_float32_large_D(D, backend):
    """float32 stays float32 at large D; against the float64 result of the same inputs,
    within tol32(L, D) of max|ref| (no naive term magnitude at this size)."""
    L = 3
    rng = np.random.default_rng([D, 53])
    ws = rng.standard_normal((2, L, D)).astype(np.float32)
    g = rng.standard_normal((2, D)).astype(np.float32)
    ref = K.pconv(ws.astype(np.float64), backend="direct")
    t = T.tol32(L, D)
    T.assert_scaled(_f32(K.pconv(ws, backend=backend)), ref, t, t * T.peak(ref), f"pconv f32 {backend}")
    ref = K.pconv_vjp(ws.astype(np.float64), g.astype(np.float64), backend="direct")
    T.assert_scaled(_f32(K.pconv_vjp(ws, g, backend=backend)), ref, t, t * T.peak(ref, 2), f"vjp f32 {backend}")


def _f32(a):
    assert a.dtype == np.float32, a.dtype
    return a


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("backend", K.BACKENDS)
def test_backends_are_thread_safe(backend):
    """pconv/jvp/vjp/xcorr(backend=...) from 4 threads at once, each with its own
    shapes (fftw plans are per thread), several rounds, against the direct kernels."""
    rng = np.random.default_rng(43)
    jobs = []
    for i, (B, L, D) in enumerate([(3, 3, 64), (1, 2, 100), (2, 4, 257), (1, 3, 1024)] * 3):
        ws, dws, g = rng.standard_normal((B, L, D)), rng.standard_normal((B, L, D)), rng.standard_normal((B, D))
        jobs.append((ws, dws, g))
    refs = [(K.pconv(ws, backend="direct"), K.pconv_jvp(ws, dws, backend="direct"),
             K.pconv_vjp(ws, g, backend="direct"), K.xcorr(g, ws[:, 0], backend="direct")) for ws, dws, g in jobs]

    def work(k):
        ws, dws, g = jobs[k]
        out = None
        for _ in range(20):
            out = (K.pconv(ws, backend=backend), K.pconv_jvp(ws, dws, backend=backend),
                   K.pconv_vjp(ws, g, backend=backend), K.xcorr(g, ws[:, 0], backend=backend))
        return out

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(len(jobs))))
    for k, (got, ref) in enumerate(zip(results, refs)):
        for name, a, b, core in zip(("pconv", "jvp", "vjp", "xcorr"), got, ref, (1, 1, 2, 1)):
            T.assert_close64(a, b, core=core, err_msg=f"job {k} {name}")


def test_fftw_plan_cache_eviction_keeps_results_right():
    # more distinct (rows, D) problems than one thread keeps plans for
    rng = np.random.default_rng(47)
    for B in range(1, 80):
        ws = rng.standard_normal((B, 2, 16))
        T.assert_close64(K.pconv(ws, backend="fftw"), K.pconv(ws, backend="direct"))
    K.clear_plans()
    ws = rng.standard_normal((2, 2, 16))
    T.assert_close64(K.pconv(ws, backend="fftw"), K.pconv(ws, backend="direct"))


# --------------------------------------------------------------------------- warmup


def test_warmup_runs():
    import fastbias

    assert K.warmup() is None
    assert K.warmup(dtypes=("float32",)) is None
    assert fastbias.warmup() is None
