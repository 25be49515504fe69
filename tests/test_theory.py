"""Tests for fastbias.theory: max-margin solutions and their KKT conditions, the
certificates of eqs. (11)-(13), stationary points of eq. (10), the theorems per
architecture, and the induced penalties of Lemmas 5-7 held against local
minimizations of ||w||^2 subject to P(w) = beta evaluated with the kernels."""

import math
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import minimize

from fastbias import kernels as K
from fastbias import theory as T
from fastbias.data import gaussian_dataset, is_separable


@pytest.fixture(scope="module")
def data():
    return gaussian_dataset(12, 16, seed=0)


@pytest.fixture(scope="module")
def solutions(data):
    X, y = data
    return {pen: T.max_margin(X, y, pen) for pen in T.PENALTIES}


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------- max_margin


def test_is_separable_is_the_data_lp():
    assert T.is_separable is is_separable


@pytest.mark.parametrize("shape", [(12, 16), (9, 7)])
@pytest.mark.parametrize("penalty", T.PENALTIES)
def test_max_margin_satisfies_its_kkt_conditions(penalty, shape):
    X, y = gaussian_dataset(*shape, seed=3)
    sol = T.max_margin(X, y, penalty)
    assert sol.status == "optimal" and sol.solver == "CLARABEL"
    assert sol.polished and sol.kkt_error < 1e-10
    A = y[:, None] * X
    m = A @ sol.beta
    assert m.min() == pytest.approx(1.0, abs=1e-12)  # scaled to minimum margin exactly 1
    assert_allclose(sol.margins, m)
    assert sol.value == pytest.approx(T.penalty_value(sol.beta, penalty), rel=1e-12)
    # strong duality of min ||.|| s.t. margins >= 1: sum(alpha) = value
    assert sol.alpha.sum() == pytest.approx(sol.value, rel=1e-10)
    assert np.all(sol.alpha >= 0)
    # complementary slackness: support vectors on the margin, the others with alpha ~ 0
    assert_allclose(m[sol.support_vectors], 1.0, atol=1e-12)
    rest = np.setdiff1d(np.arange(len(y)), sol.support_vectors)
    assert np.all(sol.alpha[rest] <= 1e-6 * sol.alpha.max())
    # stationarity: s = sum_n alpha_n y_n x_n is a subgradient of the penalty at beta
    s = A.T @ sol.alpha
    if penalty == "l2":
        assert_allclose(s, sol.beta / np.linalg.norm(sol.beta), atol=1e-12)
        return
    z = sol.beta if penalty == "l1" else T.unitary_dft(sol.beta)
    r = s if penalty == "l1" else T.unitary_dft(s)
    on = np.abs(z) > 1e-3 * np.abs(z).max()
    assert on.sum() <= shape[1] - 1  # sparse (in coordinates / in frequency)
    assert_allclose(r[on], z[on] / np.abs(z[on]), atol=1e-12)
    assert np.all(np.abs(r) <= 1 + 1e-12)
    if penalty == "fourier_l1":  # the conjugate pairs: both members are in the support
        D = shape[1]
        assert np.array_equal(on, on[(-np.arange(D)) % D])


def test_max_margin_small_2d_by_hand():
    # one support vector x = (1, 2), y = +1; a second point (3, 3) off the margin
    X = np.array([[1.0, 2.0], [3.0, 3.0]])
    y = np.array([1.0, 1.0])
    # l2: beta = x / |x|^2; l1: all weight on the larger coordinate; Fourier (D = 2):
    # |beta_hat|_1 = (|b0 + b1| + |b0 - b1|) / sqrt 2 = sqrt 2 max(|b0|, |b1|) -> b0 = b1 = 1/3
    want = {"l2": ([0.2, 0.4], 1 / math.sqrt(5)), "l1": ([0.0, 0.5], 0.5),
            "fourier_l1": ([1 / 3, 1 / 3], math.sqrt(2) / 3)}
    for pen, (beta, value) in want.items():
        sol = T.max_margin(X, y, pen)
        assert_allclose(sol.beta, beta, atol=1e-7)
        assert sol.value == pytest.approx(value, rel=1e-7)
        assert_allclose(sol.alpha, [value, 0.0], atol=1e-7)  # one support vector: alpha = value
        assert sol.support_vectors.tolist() == [0]


def test_max_margin_pairwise_cosines_differ(solutions):
    # the three implicit biases give three different directions on generic data
    b = {k: s.beta for k, s in solutions.items()}
    for a, c in [("l2", "l1"), ("l2", "fourier_l1"), ("l1", "fourier_l1")]:
        assert 0.5 < _cos(b[a], b[c]) < 0.99


def _planted(domain, D, support, coef, n_extra, seed):
    """A dataset whose max-margin solution (l1 in ``domain``) is known: ``beta*`` with
    ``T beta* = coef`` on ``support``, s support vectors built from the KKT conditions
    (margins 1, ``sum alpha_n y_n x_n`` the subgradient, large off-support parts that
    cancel in the dual), plus points off the margin. s = real dimension of the support,
    so beta* is the unique solution."""
    rng = np.random.default_rng(seed)
    if domain == "fourier":
        z = np.zeros(D, complex)
        for d, c in zip(support, coef):
            z[d] = c
            z[(-d) % D] = np.conj(c)
        beta = np.fft.ifft(z * math.sqrt(D)).real
        sub = np.abs(z) > 0
        g = np.fft.ifft(np.where(sub, z / np.where(sub, np.abs(z), 1), 0) * math.sqrt(D)).real
        basis = []
        for d in np.flatnonzero(sub):
            e = np.zeros(D, complex)
            e[d] = 1
            v = np.fft.ifft(e)
            basis += [v.real, v.imag]
        U, sv, _ = np.linalg.svd(np.array(basis).T, full_matrices=False)
        Q = U[:, sv > 1e-10]
    else:
        beta = np.zeros(D)
        beta[support] = coef
        g = np.sign(beta)
        Q = np.eye(D)[:, support]
    s = Q.shape[1]
    A1 = float(np.sum(np.abs(np.fft.fft(beta) / math.sqrt(D)))) if domain == "fourier" else float(np.abs(beta).sum())
    alpha = rng.uniform(0.5, 1.5, s)
    alpha *= A1 / alpha.sum()
    e = (Q @ rng.standard_normal((s, s))).T
    e -= np.outer(e @ beta / (beta @ beta), beta)
    e -= alpha @ e / alpha.sum()
    Poff = np.eye(D) - Q @ Q.T
    o = 3.0 * (Poff @ rng.standard_normal((D, s))).T
    o -= alpha @ o / alpha.sum()
    sv = g / A1 + e + o
    signs = rng.choice([-1.0, 1.0], s)
    X = [signs[:, None] * sv]
    ylist = [signs]
    extra = rng.standard_normal((n_extra, D))
    mm = extra @ beta
    extra *= (rng.uniform(1.5, 2.5, n_extra) / np.abs(mm))[:, None]
    X.append(extra)
    ylist.append(np.sign(mm))
    X = np.concatenate(X)
    y = np.concatenate(ylist)
    assert_allclose((y[:, None] * X)[:s] @ beta, 1.0, atol=1e-12)
    assert_allclose(alpha @ (y[:s, None] * X[:s]), g, atol=1e-12)
    return X, y, beta, alpha


@pytest.mark.parametrize("case", [
    ("fourier", 12, [0, 3, 6], [2.0, 1.5 * np.exp(0.7j), -0.8]),  # DC, a pair, the Nyquist bin
    ("fourier", 9, [2, 4], [1.0 * np.exp(-1.1j), 0.6 * np.exp(2.0j)]),
    ("primal", 10, [1, 4, 7], [1.5, -0.7, 0.4]),
])
def test_planted_sparse_teacher_is_recovered(case):
    domain, D, support, coef = case
    X, y, beta, alpha = _planted(domain, D, support, coef, n_extra=8, seed=1)
    pen = "fourier_l1" if domain == "fourier" else "l1"
    sol = T.max_margin(X, y, pen)
    assert_allclose(sol.beta, beta, atol=1e-12 * np.abs(beta).max())
    s = len(alpha)
    assert sol.support_vectors.tolist() == list(range(s))
    assert_allclose(sol.alpha, np.r_[alpha, np.zeros(len(y) - s)], rtol=1e-10, atol=1e-12)
    cert = T.kkt_residual(X, y, beta, 1, domain)
    assert cert.residual < 1e-8
    assert_allclose(cert.alpha[:s], alpha, rtol=1e-8)
    arch = "conv" if domain == "fourier" else "diag"
    assert_allclose(T.predicted(X, y, arch, 2).beta, beta, atol=1e-6 * np.abs(beta).max())
    # the l2 max margin (fc nets) is a different predictor on these data
    assert _cos(T.max_margin(X, y, "l2").beta, beta) < 0.99


def test_sparse_teachers_favour_their_bias():
    D = 16
    teacher = np.cos(2 * np.pi * 3 * np.arange(D) / D + 0.4)  # one frequency pair
    X, y = gaussian_dataset(40, D, seed=1, teacher=teacher)
    f = T.max_margin(X, y, "fourier_l1").beta
    assert _cos(f, teacher) > 0.95 > _cos(T.max_margin(X, y, "l2").beta, teacher) + 0.05
    z = np.abs(T.unitary_dft(f))
    assert (z[3] ** 2 + z[13] ** 2) / np.sum(z ** 2) > 0.9
    teacher = np.zeros(D)
    teacher[[2, 7]] = [1.0, -2.0]  # two coordinates
    X, y = gaussian_dataset(40, D, seed=1, teacher=teacher)
    assert _cos(T.max_margin(X, y, "l1").beta, teacher) > 0.98 > _cos(T.max_margin(X, y, "l2").beta, teacher) + 0.05


# --------------------------------------------------------------------------- kkt_residual


@pytest.mark.parametrize("penalty,p,domain", [
    ("l2", 2.0, "primal"), ("l2", 2.0, "fourier"), ("l1", 1.0, "primal"), ("fourier_l1", 1.0, "fourier"),
])
def test_kkt_residual_zero_at_solutions_positive_when_perturbed(data, solutions, penalty, p, domain):
    X, y = data
    beta = solutions[penalty].beta
    cert = T.kkt_residual(X, y, beta, p, domain)
    assert cert.residual < 1e-10
    assert set(cert.support_vectors) <= set(solutions[penalty].support_vectors)
    assert np.all(cert.alpha >= 0)
    if p == 1:
        assert len(cert.support) < X.shape[1]
    rng = np.random.default_rng(7)
    for scale in (1e-2, 1e-1):
        noisy = beta + scale * np.linalg.norm(beta) / 4 * rng.standard_normal(beta.shape)
        assert T.kkt_residual(X, y, noisy, p, domain).residual > scale / 10


def test_kkt_residual_scale_invariant_and_parseval(data, solutions):
    X, y = data
    b = solutions["l2"].beta
    c1 = T.kkt_residual(X, y, 7.0 * b, 2, "primal")
    c2 = T.kkt_residual(X, y, b, 2, "fourier")
    assert c1.residual == pytest.approx(c2.residual, rel=1e-6, abs=1e-12)
    assert_allclose(c1.beta, b, rtol=1e-12)


def test_kkt_residual_of_the_wrong_problem_is_large(data, solutions):
    X, y = data
    assert T.kkt_residual(X, y, solutions["l2"].beta, 1, "fourier").residual > 0.1
    assert T.kkt_residual(X, y, solutions["fourier_l1"].beta, 1, "primal").residual > 0.1
    assert T.kkt_residual(X, y, solutions["l1"].beta, 2, "primal").residual > 0.1


def test_kkt_residual_reports_tolerances_and_parts(data, solutions):
    X, y = data
    cert = T.kkt_residual(X, y, solutions["fourier_l1"].beta, 1, "fourier")
    assert set(cert.tolerances) == {"margin", "support"}
    assert set(cert.parts) == {"stationarity", "off_support", "complementarity", "dropped"}
    assert cert.residual == max(cert.parts.values())
    D = X.shape[1]
    assert set(cert.support) == set((-cert.support) % D)  # conjugate pairs together
    repr(cert)


# --------------------------------------------------------------------------- stationary points


def test_stationary_points_2d_by_hand():
    # min |b0|^p + |b1|^p s.t. b0 + 2 b1 >= 1, p < 1: both corners are stationary points
    X = np.array([[1.0, 2.0], [3.0, 3.0]])
    y = np.array([1.0, 1.0])
    for start, corner in [([0.9, 0.05], [1.0, 0.0]), ([0.1, 0.45], [0.0, 0.5])]:
        sp = T.stationary_point(X, y, 0.5, "primal", np.array(start))
        assert_allclose(sp.beta, corner, atol=1e-7)
        assert sp.certificate.residual < 1e-6
        assert T.kkt_residual(X, y, np.array(corner), 0.5, "primal").residual < 1e-12
    # a point between the corners, on the margin, is not stationary
    assert T.kkt_residual(X, y, np.array([1 / 3, 1 / 3]), 0.5, "primal").residual > 0.1


@pytest.mark.parametrize("p,domain", [(2 / 3, "fourier"), (0.5, "fourier"), (0.5, "primal"), (1.5, "fourier")])
def test_stationary_point_certified(data, p, domain):
    X, y = data
    sp = T.stationary_point(X, y, p, domain)
    assert (y[:, None] * X @ sp.beta).min() == pytest.approx(1.0, abs=1e-12)
    assert sp.certificate.residual < 1e-4
    assert sp.value == pytest.approx(np.sum(np.abs(T._transform(sp.beta, domain)) ** p) ** (1 / p))


def test_stationary_point_convex_cases_are_the_max_margins(data, solutions):
    X, y = data
    assert_allclose(T.stationary_point(X, y, 1, "fourier").beta, solutions["fourier_l1"].beta)
    assert_allclose(T.stationary_point(X, y, 2, "fourier").beta, solutions["l2"].beta)


# --------------------------------------------------------------------------- predicted


def test_predicted_per_architecture(data, solutions):
    X, y = data
    for arch, depth in [("linear", 1), ("fc", 1), ("fc", 2), ("fc", 5), ("conv", 1), ("diag", 1)]:
        pred = T.predicted(X, y, arch, depth)
        assert_allclose(pred.beta, solutions["l2"].beta)
        assert pred.p == 2.0 and pred.certificate.residual < 1e-4
    assert "Theorem 1" in T.predicted(X, y, "fc", 3).problem
    pred = T.predicted(X, y, "conv", 2)
    assert "Theorem 2" in pred.problem
    assert_allclose(pred.beta, solutions["fourier_l1"].beta)
    assert_allclose(T.predicted(X, y, "diag", 2).beta, solutions["l1"].beta)
    pred = T.predicted(X, y, "diag", 3)
    assert pred.p == pytest.approx(2 / 3) and pred.domain == "primal" and pred.certificate.residual < 1e-4


def test_predicted_conv_depth3_matches_gradient_descent(data):
    import fastbias

    X, y = data
    run = fastbias.fit(X, y, arch="conv", depth=3, steps=2 * 10**5)
    cert = T.kkt_residual(X, y, run.beta, 2 / 3, "fourier")
    assert cert.residual < 1e-2
    pred = T.predicted(X, y, "conv", 3, start=run.beta)
    assert "Theorem 2a" in pred.problem
    assert pred.certificate.residual < 1e-4
    assert _cos(pred.beta, run.beta) > 0.9999
    # the certificate of the finite-t predictor is limited by its not-yet-zero coefficients
    assert cert.parts["dropped"] == cert.residual


# --------------------------------------------------------------------------- Lemmas 5-7


def _local_minima(arch, beta, L, widths, starts, seed):
    """||w||^2 at local minimizers of ||w||^2 s.t. P(w) = beta (SLSQP, random starts),
    with P and its Jacobian (rows = VJPs of the unit vectors) from fastbias.kernels."""
    D = beta.shape[0]
    eye = np.eye(D)
    if arch in ("conv", "diag"):
        n = L * D
        Pf, vjp = (K.pconv, K.pconv_vjp) if arch == "conv" else (K.pdiag, K.pdiag_vjp)
        P = lambda w: Pf(w.reshape(L, D))
        J = lambda w: vjp(w.reshape(L, D), eye).reshape(D, n)
    else:
        dims = [D] + list(widths) + [1]
        off = np.cumsum([0] + [a * b for a, b in zip(dims[:-1], dims[1:])])
        n = int(off[-1])
        unpack = lambda w: [w[off[l]:off[l + 1]].reshape(dims[l], dims[l + 1]) for l in range(L)]
        P = lambda w: K.pfull(unpack(w))
        J = lambda w: np.concatenate([g.reshape(D, -1) for g in K.pfull_vjp(unpack(w), eye)], axis=1)
    rng = np.random.default_rng(seed)
    found = []
    for _ in range(starts):
        res = minimize(lambda w: w @ w, rng.standard_normal(n), jac=lambda w: 2 * w, method="SLSQP",
                       constraints=[{"type": "eq", "fun": lambda w: P(w) - beta, "jac": J}],
                       options={"maxiter": 1000, "ftol": 1e-14})
        if np.max(np.abs(P(res.x) - beta)) < 1e-8:
            found.append(float(res.x @ res.x))
    assert found, "no local minimization reached P(w) = beta"
    return np.array(found)


@pytest.mark.parametrize("arch,L,D,widths", [
    ("conv", 1, 6, None), ("conv", 2, 6, None), ("conv", 2, 5, None), ("conv", 3, 5, None), ("conv", 4, 6, None),
    ("diag", 2, 5, None), ("diag", 3, 5, None),
    ("fc", 1, 4, []), ("fc", 2, 4, [3]), ("fc", 3, 4, [3, 2]),
])
def test_induced_penalty_is_the_minimum_of_the_weight_norm(arch, L, D, widths):
    beta = np.random.default_rng(L * 10 + D).standard_normal(D)
    R = T.induced_penalty(beta, arch, L)
    w = T.balanced_factorization(beta, arch, L, widths) if arch == "fc" else T.balanced_factorization(beta, arch, L)
    # P(w*) reproduces beta through the kernels, and ||w*||^2 = R
    if arch == "fc":
        assert_allclose(K.pfull(w), beta, atol=1e-12)
        assert sum(float(np.sum(W ** 2)) for W in w) == pytest.approx(R, rel=1e-12)
        norms = [float(np.sum(W ** 2)) for W in w]
    else:
        assert_allclose((K.pconv if arch == "conv" else K.pdiag)(w), beta, atol=1e-12)
        assert float(np.sum(w ** 2)) == pytest.approx(R, rel=1e-12)
        norms = list(np.sum(w ** 2, axis=1))
    assert_allclose(norms, R / L, rtol=1e-10)  # balanced layers
    # no local minimizer does better, and the best one attains R
    found = _local_minima(arch, beta, L, widths, starts=3, seed=D + L)
    assert found.min() >= R * (1 - 1e-9)
    assert found.min() == pytest.approx(R, rel=1e-7)
    if arch == "conv":
        # Lemma 7 as printed, L ||beta_hat||_{2/L}^{2/L}, is off by the factor D^{(L-1)/L}
        # that beta_hat = D^{(L-1)/2} prod w_hat_l puts in (README, "Theory")
        printed = L * np.sum(np.abs(T.unitary_dft(beta)) ** (2 / L))
        assert printed == pytest.approx(R * D ** ((L - 1) / L), rel=1e-12)


@pytest.mark.parametrize("L", [2, 3, 4])
def test_balanced_conv_factors_real_bins_with_signs(L):
    # negative DC and Nyquist coefficients (real bins): signs, not phases, keep w real
    D = 8
    beta = np.fft.irfft(np.array([-3.0, 1 + 1j, 0.5j, -2, 0.0]), D)
    w = T.balanced_factorization(beta, "conv", L)
    assert w.dtype == np.float64 and w.shape == (L, D)
    assert_allclose(K.pconv(w), beta, atol=1e-12)
    assert float(np.sum(w ** 2)) == pytest.approx(T.induced_penalty(beta, "conv", L), rel=1e-12)


def test_induced_penalty_closed_forms():
    beta = np.array([3.0, -4.0, 0.0])
    assert T.induced_penalty(beta, "linear", 1) == pytest.approx(25.0)
    assert T.induced_penalty(beta, "fc", 2) == pytest.approx(2 * 5.0)
    assert T.induced_penalty(beta, "diag", 2) == pytest.approx(2 * 7.0)
    assert T.induced_penalty(beta, "conv", 1) == pytest.approx(25.0)
    # conv L = 2: 2 D^{-1/2} ||beta_hat||_1
    assert T.induced_penalty(beta, "conv", 2) == pytest.approx(
        2 / math.sqrt(3) * np.sum(np.abs(T.unitary_dft(beta))))
    zero = T.balanced_factorization(np.zeros(4), "fc", 3)
    assert all(np.all(W == 0) for W in zero)


# --------------------------------------------------------------------------- bad inputs, solver failures


def test_bad_inputs_raise_naming_the_argument(data):
    X, y = data
    Xn = np.array([[1.0, 0.0], [-1.0, 0.0]])
    yn = np.array([1.0, 1.0])  # x and -x with the same label: not separable
    for call in (lambda: T.max_margin(Xn, yn, "l2"), lambda: T.predicted(Xn, yn, "conv", 2),
                 lambda: T.stationary_point(Xn, yn, 0.5, "fourier", np.ones(2))):
        with pytest.raises(ValueError, match="not linearly separable"):
            call()
    b = np.ones(16)
    bad = [
        (lambda: T.max_margin(X, y, "l3"), ValueError, "penalty"),
        (lambda: T.max_margin(X, y, 2), TypeError, "penalty"),
        (lambda: T.kkt_residual(X, y, b, 0, "fourier"), ValueError, "p must be in"),
        (lambda: T.kkt_residual(X, y, b, 2.5, "fourier"), ValueError, "p must be in"),
        (lambda: T.kkt_residual(X, y, b, -1, "fourier"), ValueError, "p must be in"),
        (lambda: T.kkt_residual(X, y, b, float("nan"), "fourier"), ValueError, "p must be in"),
        (lambda: T.kkt_residual(X, y, b, "1", "fourier"), TypeError, "p must be"),
        (lambda: T.kkt_residual(X, y, b, 1, "time"), ValueError, "domain"),
        (lambda: T.kkt_residual(X, y, np.ones(15), 1, "fourier"), ValueError, "beta"),
        (lambda: T.kkt_residual(X, y, np.full(16, np.nan), 1, "fourier"), ValueError, "beta"),
        (lambda: T.kkt_residual(X, y, -solutions_beta(X, y), 1, "fourier"), ValueError, "does not separate"),
        (lambda: T.kkt_residual(X, y, b, 1, "fourier", margin_tols=[]), ValueError, "margin_tols"),
        (lambda: T.max_margin(np.where(X > 1, np.nan, X), y, "l2"), ValueError, "X"),
        (lambda: T.max_margin(X[:, :, None], y, "l2"), ValueError, "X"),
        (lambda: T.max_margin(X, y[:-1], "l2"), ValueError, "y"),
        (lambda: T.max_margin(X, 2 * y, "l2"), ValueError, "y"),
        (lambda: T.predicted(X, y, "resnet", 2), ValueError, "arch"),
        (lambda: T.predicted(X, y, "conv", 0), ValueError, "depth"),
        (lambda: T.predicted(X, y, "conv", 2.0), TypeError, "depth"),
        (lambda: T.predicted(X, y, "linear", 2), ValueError, "depth"),
        (lambda: T.predicted(X, y, "conv", 3, start=np.ones(3)), ValueError, "start"),
        (lambda: T.stationary_point(X, y, 0.5, "fourier", np.zeros(16)), ValueError, "start"),
        (lambda: T.stationary_point(X, y, 0.5, "fourier", eps_start=0), ValueError, "eps_start"),
        (lambda: T.induced_penalty(np.ones((2, 3)), "conv", 2), ValueError, "beta"),
        (lambda: T.induced_penalty(np.ones(3), "cnn", 2), ValueError, "arch"),
        (lambda: T.induced_penalty("abc", "conv", 2), TypeError, "beta"),
        (lambda: T.balanced_factorization(np.ones(3), "fc", 3, [2]), ValueError, "widths"),
        (lambda: T.balanced_factorization(np.ones(3), "conv", 2, [2]), ValueError, "widths"),
    ]
    for call, exc, match in bad:
        with pytest.raises(exc, match=match):
            call()


def solutions_beta(X, y):
    return T.max_margin(X, y, "l2").beta


def test_solver_trouble_is_reported(data, monkeypatch):
    X, y = data
    monkeypatch.setitem(T.SOLVER_OPTIONS, "CLARABEL", {"max_iter": 3})
    monkeypatch.setitem(T.SOLVER_OPTIONS, "SCS", {"max_iters": 5})
    with pytest.warns(RuntimeWarning, match="optimal_inaccurate") as record:
        sol = T.max_margin(X, y, "fourier_l1")
    assert sol.status == "optimal_inaccurate"
    assert any("user_limit" in str(w.message) for w in record)  # Clarabel's status is named too
    assert any("duality gap" in str(w.message) for w in record)
    monkeypatch.setattr(T, "SOLVERS", ("CLARABEL",))
    monkeypatch.setitem(T.SOLVER_OPTIONS, "CLARABEL", {"max_iter": 2})
    with pytest.raises(RuntimeError, match="user_limit"):
        T.max_margin(X, y, "l2")


def test_fallback_to_scs(data, monkeypatch):
    X, y = data
    monkeypatch.setitem(T.SOLVER_OPTIONS, "CLARABEL", {"max_iter": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = T.max_margin(X, y, "fourier_l1")
    assert sol.solver == "SCS" and sol.status == "optimal"
    assert sol.gap < T.ACCURACY_TOL
