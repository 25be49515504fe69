"""The single-run loop with spectral bins in SIMD lanes (``_bins.gd_bins``, used by
``fit`` for diag and conv nets) against literal time-domain GD and against the
lockstep loop ``_gd.gd_group``, over shapes that exercise its layout: one and
several blocks of eight slots, padding, DC and Nyquist packed in one slot (even
D) or not (odd D), sample counts that are not multiples of four or sixteen."""

import warnings

import numpy as np
import pytest

import fastbias
import naive
from fastbias.data import gaussian_dataset
from fastbias.engine import Problem
from fastbias.kernels import _gd


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("arch,N,D,L", [
    ("conv", 5, 1, 2), ("conv", 7, 2, 3), ("conv", 17, 33, 2), ("conv", 9, 18, 4), ("conv", 6, 16, 1),
    ("diag", 17, 9, 3), ("diag", 3, 1, 2),
])
@pytest.mark.parametrize("loss", ["exp", "logistic"])
@pytest.mark.parametrize("step,step_size", [("fixed", 2e-3), ("adaptive", 1.0)])
def test_bins_equal_literal_gd(arch, N, D, L, loss, step, step_size):
    X, y = gaussian_dataset(N, D, seed=11)
    init = np.random.default_rng(4).standard_normal((L, D)) / np.sqrt(D)
    betas, _ = naive.gd(X, y, arch, init, steps=400, loss=loss, step=step, step_size=step_size)
    run = fastbias.fit(X, y, arch=arch, depth=L, loss=loss, steps=400, step=step, step_size=step_size,
                       init=init, record="last", allow_nonseparable=True)
    assert run.steps_done == 400
    assert _rel(run.beta, betas[-1]) < 1e-10


def _loops(p, theta, steps, loss, adaptive, step):
    """(theta, stats) after ``steps`` of gd_bins and of gd_group from ``theta``."""
    out = []
    for which in ("bins", "group"):
        t = theta.copy()
        st = np.zeros(_gd.N_STATS)
        if which == "bins":
            p.gd_bins(t, loss, adaptive, step, steps, st)
        else:
            _gd.gd_run(t, *p.loop_args(), p.Z, p.pw, p.X2, p.Xh, loss, adaptive, step, steps, st)
        out.append((t, st))
    return out


@pytest.mark.parametrize("arch,N,D,L", [("conv", 37, 40, 3), ("conv", 33, 31, 2), ("diag", 21, 50, 4),
                                        ("conv", 128, 128, 3)])
@pytest.mark.parametrize("loss", [_gd.EXP_LOSS, _gd.LOGISTIC_LOSS])
def test_bins_equal_lockstep_loop(arch, N, D, L, loss):
    """Same iterates, losses, halvings and statuses as gd_group (to rounding)."""
    X, y = gaussian_dataset(N, D, seed=2)
    p = Problem(X, y, arch, L)
    theta = p.theta_from_weights(p.init_weights(1.0 / np.sqrt(D), 5))
    for adaptive, step in ((True, 1.0), (True, 1.9), (False, 1e-3)):
        (tb, sb), (tg, sg) = _loops(p, theta, 1500, loss, adaptive, step)
        assert _rel(tb, tg) < 1e-11
        assert sb[_gd.ST_STATUS] == sg[_gd.ST_STATUS] == _gd.RUNNING
        assert sb[_gd.ST_STEPS] == sg[_gd.ST_STEPS] == 1500
        assert sb[_gd.ST_HALVINGS] == sg[_gd.ST_HALVINGS]
        np.testing.assert_allclose(sb[:3], sg[:3], rtol=1e-11)


def test_bins_statuses():
    X, y = gaussian_dataset(9, 12, seed=1)
    for arch in ("conv", "diag"):
        p = Problem(X, y, arch, 3)
        # all filters zero: the gradient vanishes (depth >= 2), GD stays put
        (tb, sb), (tg, sg) = _loops(p, np.zeros(p.P), 10, _gd.EXP_LOSS, True, 1.0)
        assert sb[_gd.ST_STATUS] == sg[_gd.ST_STATUS] == _gd.STATIONARY
        assert sb[_gd.ST_STEPS] == 0 and np.all(tb == 0.0)
        # a huge fixed step overflows
        theta = p.theta_from_weights(p.init_weights(1.0, 0))
        (tb, sb), (tg, sg) = _loops(p, theta, 50, _gd.EXP_LOSS, False, 1e8)
        assert sb[_gd.ST_STATUS] == sg[_gd.ST_STATUS] == _gd.NONFINITE
        assert sb[_gd.ST_STEPS] == sg[_gd.ST_STEPS] < 50


def test_bins_layout_round_trip():
    """Unpacking theta into slots and back gives theta (conv even and odd D, diag)."""
    for arch, D in (("conv", 32), ("conv", 33), ("conv", 2), ("diag", 19)):
        X, y = gaussian_dataset(4, D, seed=0)
        p = Problem(X, y, arch, 3)
        theta = p.theta_from_weights(p.init_weights(1.0, 3))
        t = theta.copy()
        st = np.zeros(_gd.N_STATS)
        p.gd_bins(t, _gd.EXP_LOSS, True, 1.0, 0, st)
        assert np.array_equal(t, theta)
        assert st[_gd.ST_STEPS] == 0


@pytest.mark.parametrize("arch,N,D,L", [("conv", 16, 32, 4), ("conv", 12, 100, 3), ("diag", 11, 20, 2),
                                        ("conv", 9, 150, 2)])
@pytest.mark.parametrize("loss", [_gd.EXP_LOSS, _gd.LOGISTIC_LOSS])
def test_bins_runs_together_equal_runs_alone(arch, N, D, L, loss):
    """Runs advanced in one call (different starts and step sizes, one of them
    finished beforehand) get the bits they get alone; the finished run is left alone."""
    X, y = gaussian_dataset(N, D, seed=6)
    p = Problem(X, y, arch, L)
    thetas = np.stack([p.theta_from_weights(p.init_weights(1.0 / np.sqrt(D), s)) for s in range(4)])
    step = np.array([1.0, 0.5, 1.9, 1.0])
    for adaptive in (True, False):
        stp = step if adaptive else 1e-3 * step
        st = np.zeros((4, _gd.N_STATS))
        st[2, _gd.ST_STATUS] = _gd.STUCK
        st[2, _gd.ST_LOG_LOSS] = 123.0
        together = thetas.copy()
        p.gd_bins(together, loss, adaptive, stp, 700, st)
        assert np.array_equal(together[2], thetas[2]) and st[2, _gd.ST_LOG_LOSS] == 123.0
        assert st[2, _gd.ST_STATUS] == _gd.STUCK
        for r in (0, 1, 3):
            t = thetas[r].copy()
            s1 = np.zeros(_gd.N_STATS)
            p.gd_bins(t, loss, adaptive, stp[r], 700, s1)
            assert np.array_equal(t, together[r])
            assert np.array_equal(s1, st[r])
            assert s1[_gd.ST_STEPS] == 700


def test_bins_tag_compile_time_shapes():
    """The loop is compiled for the block count (rounded up to a power of two, up to
    STATIC_MAX_BLOCKS), on small problems for the depth, and for the kind of spectra."""
    from fastbias.kernels import _bins

    for arch, D, L, blocks, layers in (("conv", 32, 4, 2, 4), ("conv", 33, 3, 4, 0), ("conv", 64, 2, 4, 0),
                                       ("conv", 66, 2, 8, 0), ("diag", 70, 3, 0, 0), ("diag", 9, 1, 2, 1),
                                       ("diag", 16, 3, 2, 3), ("conv", 7, 2, 1, 2)):
        X, y = gaussian_dataset(5, D, seed=0)
        p = Problem(X, y, arch, L)
        tag = p.bins[0]
        assert (len(tag[0]), len(tag[1])) == (blocks, layers), (arch, D, L)
        assert len(tag[2]) == (0 if arch == "diag" else 2 if D % 2 == 0 else 1)  # real, complex, packed
        if blocks:
            assert p.bins[6].shape[0] == _bins.LANE * blocks  # the Parseval weights, one per slot


def test_gd_bins_rejects_mismatched_run_arrays():
    from fastbias.kernels import _bins

    X, y = gaussian_dataset(6, 8, seed=0)
    p = Problem(X, y, "conv", 2)
    tag, packed, *data = p.bins
    thetas = np.zeros((2, p.P))
    with pytest.raises(ValueError, match="one step size and one stats row per run"):
        _bins.gd_bins(tag, thetas, 2, p.K, p.Ki, packed, *data, p.X2, p.Xh, _gd.EXP_LOSS, True, np.ones(3), 5,
                      np.zeros((2, _gd.N_STATS)))


def _history_call_per_row(p, theta, points, loss, adaptive, step_size, refs):
    """History columns at ``points`` from a ``gd_bins`` call per point, the norms and
    cosines from the time-domain beta and weights (NumPy)."""
    st = np.zeros(_gd.N_STATS)
    st[_gd.ST_LOG_ETA] = np.nan
    t = theta.copy()
    done = halvings = 0
    rows = []
    for pt in points:
        st[_gd.ST_HALVINGS] = 0.0
        st[_gd.ST_STEPS] = done  # the steps before the call (the direction of the passes)
        eta = st[_gd.ST_LOG_ETA]
        p.gd_bins(t, loss, adaptive, step_size, pt - done, st)
        if st[_gd.ST_STEPS] == 0:
            st[_gd.ST_LOG_ETA] = eta  # no step: the last step's size stands
        done += int(st[_gd.ST_STEPS])
        halvings += int(st[_gd.ST_HALVINGS])
        with np.errstate(all="ignore"):  # a diverged run's time-domain beta is NaN
            beta = p.beta_from_theta(t)
            bn = np.linalg.norm(beta)
            rows.append({"step": done, "halvings": halvings, "log_loss": st[_gd.ST_LOG_LOSS],
                         "min_margin": st[_gd.ST_MIN_MARGIN], "log_step_size": st[_gd.ST_LOG_ETA],
                         "beta_norm": bn, "weight_norm": np.linalg.norm(p.weights_from_theta(t)),
                         **{f"cos_{k}": beta @ r / (bn * np.linalg.norm(r)) for k, r in refs.items()}})
        if st[_gd.ST_STATUS] != _gd.RUNNING:
            break
    return rows, t


@pytest.mark.parametrize("arch,N,D,L,loss,step,step_size", [
    ("conv", 16, 32, 3, "exp", "adaptive", 1.0), ("conv", 12, 100, 3, "logistic", "adaptive", 1.9),
    ("diag", 11, 20, 2, "logistic", "fixed", 1e-3), ("conv", 20, 40, 4, "exp", "fixed", 0.1),
])
def test_history_in_one_call_equals_a_call_per_row(arch, N, D, L, loss, step, step_size):
    """``fit`` takes a diag/conv run to all its record points in one compiled call
    (``_bins.gd_bins_history``). Its history equals one built from a ``gd_bins`` call
    per record point: the same steps, losses, margins, step sizes and halvings (bits),
    norms and cosines as NumPy computes them from the time-domain beta, the same last
    row where a run stops (the last case diverges at its second step)."""
    X, y = gaussian_dataset(N, D, seed=8)
    init = np.random.default_rng(2).standard_normal((L, D)) / np.sqrt(D)
    refs = {"ones": np.ones(D), "ramp": np.arange(D, dtype=float) - 3.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the diverging run's warning
        run = fastbias.fit(X, y, arch=arch, depth=L, loss=loss, steps=300, step=step, step_size=step_size,
                           init=init, references=refs, allow_nonseparable=True)
    h = run.history
    p = Problem(X, y, arch, L)
    code = _gd.EXP_LOSS if loss == "exp" else _gd.LOGISTIC_LOSS
    want, theta = _history_call_per_row(p, p.theta_from_weights(init), h["step"], code, step == "adaptive",
                                        step_size, refs)
    assert len(want) == len(h)
    for got, w in zip(h, want):
        for col in ("step", "halvings", "log_loss", "min_margin", "log_step_size"):
            assert np.array_equal(got[col], w[col], equal_nan=True), col
        for col in ["beta_norm", "weight_norm"] + [f"cos_{k}" for k in refs]:
            if np.isfinite(w[col]):
                assert got[col] == pytest.approx(w[col], rel=1e-10, abs=1e-13), col
            else:  # diverged: inf or NaN, as the spectral or the time-domain sums give it
                assert not np.isfinite(got[col]), col
    assert np.isnan(h["step_size"][0])  # no step taken yet
    assert np.array_equal(run.beta, p.beta_from_theta(theta), equal_nan=True)
    assert run.status == ("nonfinite" if D == 40 else "running")
    assert len(h) == (3 if D == 40 else len(set(h["step"])))


def test_gd_bins_history_rejects_mismatched_rows():
    from fastbias.kernels import _bins

    X, y = gaussian_dataset(6, 8, seed=0)
    p = Problem(X, y, "conv", 2)
    tag, packed, *data = p.bins
    theta = p.theta_from_weights(p.init_weights(1.0, 0))
    args = (tag, theta, 2, p.K, p.Ki, packed, *data, p.X2, p.Xh, _gd.EXP_LOSS, True, 1.0,
            np.array([0, 5], dtype=np.int64), np.zeros(_gd.N_STATS), p.pw, p.parseval(), np.zeros((1, p.K + p.Ki)))
    with pytest.raises(ValueError, match="one row per point"):
        _bins.gd_bins_history(*args, np.zeros((2, _bins.ROW_MEASURES + 2)))
    rows = np.zeros((2, _bins.ROW_MEASURES + 3))
    assert _bins.gd_bins_history(*args, rows) == 2 and rows[1, _bins.ROW_STEPS] == 5


@pytest.mark.parametrize("arch,N,D,L", [("conv", 40, 128, 3), ("conv", 37, 20, 2), ("diag", 21, 50, 4)])
def test_bins_continued_with_its_step_count_is_bitwise_uninterrupted(arch, N, D, L):
    """The loop's passes over the data alternate in direction with the step count:
    a run continued in a second call that is given the steps done before
    (``stats[ST_STEPS]``) gets the bits of one call; from a stale count it gets
    other bits (summed in the other order: the same to rounding)."""
    X, y = gaussian_dataset(N, D, seed=3)
    p = Problem(X, y, arch, L)
    theta = p.theta_from_weights(p.init_weights(1.0 / np.sqrt(D), 1))
    whole, st = theta.copy(), np.zeros(_gd.N_STATS)
    p.gd_bins(whole, _gd.EXP_LOSS, True, 1.0, 20, st)
    for before, same in ((7, True), (0, False)):
        t, s = theta.copy(), np.zeros(_gd.N_STATS)
        p.gd_bins(t, _gd.EXP_LOSS, True, 1.0, 7, s)
        s[_gd.ST_STEPS] = before
        p.gd_bins(t, _gd.EXP_LOSS, True, 1.0, 13, s)
        assert np.array_equal(t, whole) == same
        assert _rel(t, whole) < 1e-13
