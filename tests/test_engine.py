"""The GD engine against a literal NumPy reference, and its numerical contracts."""

import copy
import pickle
import warnings

import numpy as np
import pytest

import fastbias
import naive
from fastbias.data import gaussian_dataset

CASES = [("conv", 3, 8), ("conv", 2, 7), ("diag", 3, 6), ("fc", 3, 5), ("linear", 1, 5), ("conv", 1, 6)]


def _init(arch, depth, D, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    if arch in ("conv", "diag"):
        return scale * rng.standard_normal((depth, D))
    if arch == "linear":
        return scale * rng.standard_normal(D)
    widths = [D] + [4] * (depth - 1) + [1]
    return [scale * rng.standard_normal((a, b)) for a, b in zip(widths[:-1], widths[1:])]


def _ref_init(arch, init):
    return [init[:, None]] if arch == "linear" else init


def _rel(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("arch,depth,D", CASES)
@pytest.mark.parametrize("loss", ["exp", "logistic"])
@pytest.mark.parametrize("step,step_size", [("fixed", 2e-3), ("adaptive", 1.0)])
def test_iterates_equal_reference(arch, depth, D, loss, step, step_size):
    """fastbias.fit gives the iterates of literal time-domain GD (for conv: the
    frequency-domain loop equals time-domain GD) to 1e-10 relative."""
    X, y = gaussian_dataset(6, D, seed=3)
    init = _init(arch, depth, D, seed=1)
    widths = [4] * (depth - 1) if arch == "fc" else None
    steps = 1000 if arch in ("conv", "diag") else 300
    betas, w_ref = naive.gd(X, y, "fc" if arch == "linear" else arch, _ref_init(arch, init),
                               steps=steps, loss=loss, step=step, step_size=step_size)
    run = fastbias.fit(X, y, arch=arch, depth=depth, widths=widths, loss=loss, steps=steps, step=step,
                       step_size=step_size, init=init, record=100)
    assert run.steps_done == steps
    assert _rel(run.beta, betas[-1]) < 1e-10
    # intermediate iterates too
    for row in run.history:
        assert _rel(_beta_at(X, y, arch, depth, widths, loss, step, step_size, init, int(row["step"])),
                    betas[int(row["step"])]) < 1e-10


def _beta_at(X, y, arch, depth, widths, loss, step, step_size, init, t):
    return fastbias.fit(X, y, arch=arch, depth=depth, widths=widths, loss=loss, steps=t, step=step,
                        step_size=step_size, init=init, record="last").beta


@pytest.mark.parametrize("arch,depth", [("conv", 2), ("conv", 4), ("diag", 3), ("fc", 2), ("linear", 1)])
@pytest.mark.parametrize("loss", ["exp", "logistic"])
def test_adaptive_loss_never_increases(arch, depth, loss):
    X, y = gaussian_dataset(12, 10, seed=5)
    run = fastbias.fit(X, y, arch=arch, depth=depth, loss=loss, steps=20000, record=1)
    h = run.history
    assert len(h) == 20001
    assert np.all(np.diff(h["log_loss"]) <= 0)
    assert np.all(np.isfinite(h["log_loss"]))
    assert run.status == "running"


def test_long_run_far_past_underflow():
    """log L far below -745 (where exp(-margin) underflows) and the run goes on."""
    X, y = gaussian_dataset(4, 8, seed=2)
    run = fastbias.fit(X, y, arch="conv", depth=2, steps=300000, step_size=1.5)
    h = run.history
    assert run.log_loss < -1e4
    assert np.all(np.isfinite(h["log_loss"])) and np.all(np.isfinite(run.beta))
    assert np.all(np.diff(h["log_loss"]) <= 0)
    # margins keep growing: the run did not stall when exp(-m) underflowed
    late = h[h["log_loss"] < -2000]
    assert len(late) > 3 and np.all(np.diff(late["min_margin"]) > 0)


def test_logistic_far_past_underflow():
    X, y = gaussian_dataset(8, 8, seed=2)
    run = fastbias.fit(X, y, arch="diag", depth=2, loss="logistic", steps=300000, step_size=1.5)
    assert run.log_loss < -1000
    assert np.all(np.isfinite(run.history["log_loss"]))


@pytest.mark.parametrize("arch,depth", [("conv", 3), ("fc", 3), ("diag", 2), ("linear", 1)])
@pytest.mark.parametrize("step,step_size", [("fixed", 0.01), ("adaptive", 1.0)])
def test_resume_is_bitwise_uninterrupted(arch, depth, step, step_size):
    X, y = gaussian_dataset(10, 9, seed=7)
    kw = dict(arch=arch, depth=depth, step=step, step_size=step_size, seed=4)
    full = fastbias.fit(X, y, steps=3000, **kw)
    part = fastbias.fit(X, y, steps=1234, **kw).resume(1000).resume(766)
    assert part.steps_done == full.steps_done == 3000
    assert np.array_equal(part.beta, full.beta)
    hp, hf = part.history, full.history
    common = np.intersect1d(hp["step"], hf["step"])
    assert len(common) > 10
    for col in ("log_loss", "min_margin", "beta_norm", "weight_norm"):
        a = hp[col][np.isin(hp["step"], common)]
        b = hf[col][np.isin(hf["step"], common)]
        assert np.array_equal(a, b), col


@pytest.mark.parametrize("copy_run", [copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r))])
def test_copied_run_keeps_aligned_slot_data_and_bits(copy_run):
    """A deep-copied or unpickled run continues bit for bit, with its
    slot-layout data back on 64-byte boundaries (NumPy's copies are not: the loop
    then ran 38 % slower at conv (128,128,3))."""
    X, y = gaussian_dataset(12, 40, seed=3)
    run = fastbias.fit(X, y, arch="conv", depth=3, steps=200, seed=1)
    other = copy_run(run)
    data = other._problem.bins[2:]
    assert all(a.ctypes.data % 64 == 0 for a in data if a.size)
    for a, b in zip(data, run._problem.bins[2:]):
        assert np.array_equal(a, b)
    run.resume(300)
    other.resume(300)
    assert np.array_equal(run.beta, other.beta)
    assert np.array_equal(run.history["log_loss"], other.history["log_loss"])


def test_same_seed_same_bits_and_seeds_differ():
    X, y = gaussian_dataset(10, 9, seed=7)
    a = fastbias.fit(X, y, arch="conv", depth=3, steps=500, seed=11)
    b = fastbias.fit(X, y, arch="conv", depth=3, steps=500, seed=11)
    c = fastbias.fit(X, y, arch="conv", depth=3, steps=500, seed=12)
    assert np.array_equal(a.beta, b.beta)
    assert not np.array_equal(a.beta, c.beta)


@pytest.mark.parametrize("arch,depth", [("conv", 4), ("fc", 2), ("diag", 3)])
def test_fit_many_equals_one_by_one_and_thread_count(arch, depth):
    """fit_many is bitwise independent of the thread count; it equals fit bitwise
    for fc, and to rounding for diag/conv (their SIMD-lane loop sums in another order)."""
    X, y = gaussian_dataset(10, 9, seed=7)
    seeds = [0, 1, 2, 3, 4]
    many1 = fastbias.fit_many(X, y, arch=arch, depth=depth, seeds=seeds, steps=2000, threads=1)
    many2 = fastbias.fit_many(X, y, arch=arch, depth=depth, seeds=seeds, steps=2000, threads=2)
    for s, r1, r2 in zip(seeds, many1, many2):
        assert np.array_equal(r1.beta, r2.beta)
        assert np.array_equal(r1.history["log_loss"], r2.history["log_loss"])
        one = fastbias.fit(X, y, arch=arch, depth=depth, seed=s, steps=2000)
        assert r1.steps_done == one.steps_done == 2000
        if arch == "fc":
            assert np.array_equal(r1.beta, one.beta)
            assert np.array_equal(r1.history["log_loss"], one.history["log_loss"])
        else:
            assert _rel(r1.beta, one.beta) < 1e-12
            assert np.allclose(r1.history["log_loss"], one.history["log_loss"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch,depth", [("conv", 3), ("diag", 2)])
def test_fit_many_bits_do_not_depend_on_the_batch(arch, depth):
    """A run's bits do not depend on which runs share its SIMD group, on its lane,
    on the group's lane count (groups of fewer than engine.LANES_MIN runs go one run
    per one-lane loop; at least engine.WIDE_GROUP runs per thread go in sixteen-lane
    groups) or on the thread count: 19 seeds on two threads (groups 8 + 8 + 3)
    against each seed's run in other batches (alone; in reversed order on one
    thread: 16 + 3)."""
    X, y = gaussian_dataset(12, 10, seed=5)
    seeds = list(range(19))
    kw = dict(arch=arch, depth=depth, steps=700)
    full = fastbias.fit_many(X, y, seeds=seeds, threads=2, **kw)
    rev = fastbias.fit_many(X, y, seeds=seeds[::-1], threads=1, **kw)[::-1]
    for s in (0, 7, 8, 18):
        alone = fastbias.fit_many(X, y, seeds=[s], **kw)[0]
        assert np.array_equal(full[s].beta, alone.beta)
        assert np.array_equal(full[s].history["log_loss"], alone.history["log_loss"])
    for a, b in zip(full, rev):
        assert np.array_equal(a.beta, b.beta)


@pytest.mark.parametrize("arch,depth,D", [("conv", 3, 8), ("conv", 2, 7), ("diag", 3, 6), ("conv", 1, 6)])
@pytest.mark.parametrize("loss", ["exp", "logistic"])
@pytest.mark.parametrize("step,step_size", [("fixed", 2e-3), ("adaptive", 1.0)])
def test_fit_many_lanes_equal_reference(arch, depth, D, loss, step, step_size):
    """The SIMD-lane loop of fit_many gives the iterates of literal time-domain GD,
    for each of several runs sharing the loop, to 1e-10 relative."""
    X, y = gaussian_dataset(6, D, seed=3)
    seeds = [1, 2, 3]
    runs = fastbias.fit_many(X, y, arch=arch, depth=depth, seeds=seeds, loss=loss, steps=1000, step=step,
                             step_size=step_size, init_scale=0.5, record="last")
    for seed, run in zip(seeds, runs):
        init = 0.5 * np.random.default_rng(seed).standard_normal((depth, D))
        betas, _ = naive.gd(X, y, arch, init, steps=1000, loss=loss, step=step, step_size=step_size)
        assert run.steps_done == 1000
        assert _rel(run.beta, betas[-1]) < 1e-10


@pytest.mark.parametrize("arch,depth", [("conv", 3), ("diag", 2)])
def test_fit_many_resume_is_bitwise_uninterrupted(arch, depth):
    X, y = gaussian_dataset(10, 9, seed=7)
    kw = dict(arch=arch, depth=depth, seeds=[3, 4])
    full = fastbias.fit_many(X, y, steps=1500, **kw)
    part = fastbias.fit_many(X, y, steps=600, **kw)
    for f, p in zip(full, part):
        p.resume(500).resume(400)
        assert p.steps_done == f.steps_done == 1500
        assert np.array_equal(p.beta, f.beta)


@pytest.mark.parametrize("arch,depth,loss", [("conv", 3, "exp"), ("diag", 2, "logistic")])
def test_lane_groups_mix_datasets_bitwise(arch, depth, loss):
    """Runs of different datasets share SIMD-lane groups (the sweep advances them
    together): each run gets the same bits as in a group of its own dataset."""
    from fastbias import engine

    Xs, ys = zip(*[gaussian_dataset(9, 8, seed=s) for s in range(5)])
    kw = dict(arch=arch, depth=depth, loss=loss, steps=0)
    mixed = [fastbias.fit_many(X, y, seeds=[s], **kw)[0] for s, (X, y) in enumerate(zip(Xs, ys))]
    engine._drive(mixed, 600, threads=1)  # one group of 5 runs, 5 datasets
    for s, (X, y) in enumerate(zip(Xs, ys)):
        own = fastbias.fit_many(X, y, seeds=[s, 7], loss=loss, arch=arch, depth=depth, steps=600)[0]
        assert np.array_equal(mixed[s].beta, own.beta)
        assert np.array_equal(mixed[s].history["log_loss"], own.history["log_loss"])


def test_fit_many_several_datasets():
    Xs, ys = zip(*[gaussian_dataset(10, 9, seed=s) for s in range(3)])
    runs = fastbias.fit_many(np.stack(Xs), np.stack(ys), arch="conv", depth=2, seeds=[0, 1], steps=500)
    assert len(runs) == 6
    for i, r in enumerate(runs):
        one = fastbias.fit_many(Xs[i // 2], ys[i // 2], arch="conv", depth=2, seeds=[[0, 1][i % 2]], steps=500)[0]
        assert np.array_equal(r.beta, one.beta)


def test_history_columns_and_log_spacing():
    X, y = gaussian_dataset(10, 9, seed=7)
    ref = np.ones(9)
    run = fastbias.fit(X, y, arch="conv", depth=2, steps=100000, references={"ones": ref})
    h = run.history
    for col in ("step", "log_loss", "min_margin", "normalized_margin", "beta_norm", "weight_norm",
                "step_size", "cos_ones"):
        assert col in h.dtype.names
    assert h["step"][0] == 0 and h["step"][-1] == 100000
    # about 20 records per decade over 5 decades
    assert 90 <= len(h) <= 110
    beta = run.beta
    assert np.isclose(h["cos_ones"][-1], beta @ ref / np.linalg.norm(beta) / np.linalg.norm(ref))
    assert np.isclose(h["beta_norm"][-1], np.linalg.norm(beta))
    m = y * (X @ beta)
    assert np.isclose(h["min_margin"][-1], m.min(), rtol=1e-9)
    assert np.isclose(h["normalized_margin"][-1], m.min() / np.linalg.norm(beta), rtol=1e-9)


def test_adaptive_does_not_blow_up_depth_ge_2():
    """Constant-step normalized GD blows up for depth >= 2; the certified adaptive
    step keeps ||beta|| growing slowly and the loss falling."""
    X, y = gaussian_dataset(10, 9, seed=7)
    run = fastbias.fit(X, y, arch="fc", depth=3, steps=50000)
    h = run.history
    assert np.all(np.isfinite(h["beta_norm"]))
    assert np.all(np.diff(h["log_loss"]) <= 0)
    assert h["beta_norm"][-1] < 1e3


@pytest.mark.parametrize("arch,depth", [("diag", 3), ("conv", 3), ("conv", 2), ("fc", 2)])
@pytest.mark.parametrize("many", [False, True])
def test_fixed_step_divergence_shows_nonfinite(arch, depth, many):
    """A diverging fixed-step run stops with status "nonfinite" and a warning,
    whether its loss overflows to NaN or its margins to +inf (log L = -inf; once
    hidden by fastmath folding the finiteness test of a computed value)."""
    X, y = gaussian_dataset(10, 9, seed=7)
    for step_size in (1e6, 3.0):
        with pytest.warns(RuntimeWarning, match="non-finite"):
            if many:
                run = fastbias.fit_many(X, y, arch=arch, depth=depth, seeds=[0, 1], step="fixed",
                                        step_size=step_size, steps=200)[1]
            else:
                run = fastbias.fit(X, y, arch=arch, depth=depth, step="fixed", step_size=step_size, steps=200)
        assert run.status == "nonfinite"
        assert run.steps_done < 200
        assert not np.isfinite(run.log_loss) or not np.all(np.isfinite(run.beta))


# ----------------------------------------------------------------- inputs


def test_nonseparable():
    # beta_1 > 0, 0.5 beta_2 > beta_1 and beta_2 < 0 cannot all hold
    X = np.array([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.0]])
    y = np.ones(3)
    with pytest.raises(ValueError, match="not linearly separable"):
        fastbias.fit(X, y, arch="linear", steps=10)
    with pytest.warns(RuntimeWarning, match="not linearly separable"):
        fastbias.fit(X, y, arch="linear", loss="logistic", steps=10)
    run = fastbias.fit(X, y, arch="linear", steps=10, allow_nonseparable=True)
    assert run.steps_done == 10


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(arch="cnn"), ValueError, "arch"),
        (dict(arch=3), TypeError, "arch"),
        (dict(arch="conv", depth=0), ValueError, "depth"),
        (dict(arch="conv", depth=2.5), TypeError, "depth"),
        (dict(arch="conv", steps=-1), ValueError, "steps"),
        (dict(arch="conv", loss="hinge"), ValueError, "loss"),
        (dict(arch="conv", step="constant"), ValueError, "step"),
        (dict(arch="conv", step="fixed"), ValueError, "step_size"),
        (dict(arch="conv", step="fixed", step_size=-1.0), ValueError, "step_size"),
        (dict(arch="conv", step_size=2.5), ValueError, "step_size"),
        (dict(arch="conv", step_size=float("nan")), ValueError, "step_size"),
        (dict(arch="conv", init_scale=0.0), ValueError, "init_scale"),
        (dict(arch="linear", depth=3), ValueError, "depth"),
        (dict(arch="fc", depth=3, widths=[4]), ValueError, "widths"),
        (dict(arch="fc", depth=2, widths=[0]), ValueError, "widths"),
        (dict(arch="conv", widths=[3]), ValueError, "widths"),
        (dict(arch="conv", record="sometimes"), ValueError, "record"),
        (dict(arch="conv", references={"r": np.ones(3)}), ValueError, "references"),
        (dict(arch="conv", init=np.ones((3, 3))), ValueError, "init"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    X, y = gaussian_dataset(6, 5, seed=0)
    kw = dict(steps=10)
    kw.update(kwargs)
    with pytest.raises(exc, match=match):
        fastbias.fit(X, y, **kw)


@pytest.mark.parametrize(
    "X,y,exc,match",
    [
        (np.ones(5), np.ones(5), ValueError, "X"),
        (np.ones((3, 2), dtype=int), np.ones(3), TypeError, "X"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), np.ones(2), ValueError, "X"),
        (np.ones((0, 3)), np.ones(0), ValueError, "X"),
        ("abc", np.ones(3), TypeError, "X"),
        (np.eye(3), np.ones(4), ValueError, "y"),
        (np.eye(3), np.array([1.0, 0.0, -1.0]), ValueError, r"\+1 and -1"),
        (np.eye(3), np.ones((3, 1)), ValueError, "y"),
        (np.eye(3), "yes", TypeError, "y"),
    ],
)
def test_bad_data(X, y, exc, match):
    with pytest.raises(exc, match=match):
        fastbias.fit(X, y, arch="linear", steps=1)


def test_fit_many_bad_inputs():
    X, y = gaussian_dataset(6, 5, seed=0)
    with pytest.raises(ValueError, match="seeds"):
        fastbias.fit_many(X, y, arch="conv", seeds=[], steps=1)
    with pytest.raises(ValueError, match="threads"):
        fastbias.fit_many(X, y, arch="conv", seeds=[0], steps=1, threads=0)


def test_import_fastbias_is_light():
    import subprocess
    import sys

    code = "import sys, fastbias; fastbias.fit; print('cvxpy' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_vectorizable_exp_matches_numpy():
    from fastbias.kernels._gd import LOG_TINY, exp_block

    rng = np.random.default_rng(0)
    x = np.concatenate([-rng.random(20000) * 708, -rng.random(1000) * 1e-6, [0.0, LOG_TINY + 1e-9, LOG_TINY - 1e-9, -1e300]])
    e = np.empty_like(x)
    exp_block(x, e, len(x))
    keep = x > LOG_TINY
    ref = np.exp(x[keep])
    assert np.max(np.abs(e[keep] - ref) / ref) < 1e-15
    assert np.all(e[~keep] == 0.0)


@pytest.mark.parametrize("loss", ["exp", "logistic"])
@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_margin_pass_log_domain(loss, scale):
    """The one-pass online softmax gives log L and the normalized gradient weights
    of the direct formulas, also where exp(-margin) underflows (margins ~ 1e6)."""
    from scipy.special import logsumexp

    from fastbias.kernels._gd import EXP_LOSS, LOGISTIC_LOSS, margin_pass

    rng = np.random.default_rng(1)
    N, P = 37, 11  # several blocks, a partial last one
    Z = rng.standard_normal((N, P))
    b = rng.standard_normal(P)
    b *= scale / np.max(np.abs(Z @ b))
    m = Z @ b
    G = np.empty(P)
    logL, Ma, mmin = margin_pass(Z, b, EXP_LOSS if loss == "exp" else LOGISTIC_LOSS, G)
    if loss == "exp":
        ref_logL = logsumexp(-m)
        a = -m
    else:
        # log softplus(-m); for m > 30, log(log1p(e^-m)) = -m + log1p(-e^-m / 2) up to O(e^-2m)
        big = m > 30
        lsp = np.empty_like(m)
        lsp[big] = -m[big] + np.log1p(-0.5 * np.exp(-m[big]))
        lsp[~big] = np.log(np.logaddexp(0.0, -m[~big]))
        ref_logL = logsumexp(lsp)
        a = -np.logaddexp(0.0, m)  # log sigmoid(-m)
    assert np.isclose(logL, ref_logL, rtol=1e-13, atol=1e-12)
    assert mmin == pytest.approx(m.min(), rel=1e-12)
    assert Ma == pytest.approx(a.max(), rel=1e-12)
    w = np.exp(a - a.max())
    w[a - a.max() < -700] = 0.0
    assert np.allclose(G, w @ Z, rtol=1e-12, atol=1e-12 * np.abs(Z).sum())
