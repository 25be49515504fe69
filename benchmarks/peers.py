#!/usr/bin/env python
"""fastbias's GD engine against PyTorch and JAX, timed in one process.

    python benchmarks/peers.py            # conv at 4 sizes (both time-domain variants), fc, diag
    python benchmarks/peers.py --quick    # fewer repeats, one time-domain variant per size, < 60 s

Needs the optional peers: ``pip install -e '.[peers]'`` (torch 2.13.0 is the CPU
wheel; never a plain ``torch``, which pulls a multi-GB CUDA build).

Every implementation runs gradient descent (eq. 7) on the exponential loss of the
same network from the same initial weights, on one CPU thread:

* ``fastbias``: ``fastbias.fit(..., step="adaptive")`` per iteration with its
  log-spaced history recording: ``Run.resume(n)`` of a copy of a ``fit(steps=0)``
  run (the same driver as ``fit``; n >= 10^4); ``fit`` runs its one run on the
  calling thread (no Numba threads). ``fit``'s per-call setup (validation, the
  separability LP, the prepared data) is reported apart (``setup ms``). Also the raw
  compiled loops with no Python around them: ``_gd.gd_run`` (the general lockstep
  loop with one run) and the loop ``fit`` calls (``_bins.gd_bins`` for diag/conv,
  ``_gd.gd_group`` with one run for fc).
* ``torch``: PyTorch eager with autograd, the time-domain net of eqs. (2)-(3)
  (``h_l = h_{l-1} * w_l`` circular cross-correlations, ``f = <h_{L-1}, w_L>``),
  ``log L = logsumexp(-m)``, ``backward``, and the normalized-GD step ``eta = c / L``
  (``w -= c grad log L``, the log-domain form). ``torch.set_num_threads(1)``.
* ``jax-td``: the same model and step in ``jax.jit`` + ``lax.fori_loop`` with
  ``jax.value_and_grad``.
  The cross-correlation layers come in two variants, both measured (``--quick``: the
  one that is faster at that D, by the rule ``gather`` for D <= 128): ``gather``,
  ``h @ C(w)`` with the circulant ``C(w)[j, d] = w[(j - d) mod D]`` built by an index
  gather, and ``fft``, ``irfft(rfft(h) conj(rfft(w)))``. The table shows the faster.
* ``jax-ours``: fastbias's own frequency-domain algorithm in JAX (``jit`` +
  ``fori_loop``): half spectra ``W_l = rfft(w_l)``, ``Z = y pw rfft(x)`` once, margins
  ``m = Re <Z, prod W_l>`` (Parseval), softmax weights ``e = exp(-m - max)``,
  ``G = sum e_n Z_n`` and ``W_l += mult (G / pw) conj(prod_{j != l} W_j)`` with the
  certified adaptive ``mult = c / (sum(e) S)`` (README, "Certified step sizes"). It
  omits fastbias's segment certification and loss guard (less work than fastbias
  does); ``jax-ours+cert`` has both (``lax.while_loop`` halvings), i.e. exactly
  fastbias's iteration. Diagonal nets run the same code with real arrays (identity
  in place of the DFT), as in fastbias. fc nets have no ``jax-ours``.

The peers' normalized step uses ``c = 1 / S(w_0)`` (the certified constant at the
initial point), so their runs stay finite over the timed iterations (checked).

Before timing, every implementation runs 100 fixed-step iterations (``eta`` =
0.5 / (L(w_0) S(w_0))) from the same weights and must agree with
``fastbias.fit(..., step="fixed")`` on beta to 1e-8 relative; ``jax-ours`` and
``jax-ours+cert`` are also checked against 100 adaptive fastbias steps.

Timing: float64; compilation and a first call are excluded; each repeat takes one
sample of every implementation, in a rotated order (interleaved); a sample runs n
iterations from the initial weights, n chosen so a sample lasts ``--sample-ms``;
an implementation's time is the minimum over repeats of sample / n. On a shared
machine absolute times drift: the ratios (peer / fastbias), measured in one
process, are what carries over.

Also: 10^6 fastbias iterations at (16, 32, 4) wall time, and ``fit_many`` with 64
seeds sharing one dataset at threads=1 and threads=2 (4 lockstep groups of
``engine.WIDE_GROUP`` = 16 runs on a thread pool of that many workers; microseconds per
run-iteration, (T(steps=n) - T(steps=0)) / (64 n), ``record="last"``).
"""

import os
import sys

if __name__ == "__main__":
    # One CPU thread for every library; must be set before they are imported.
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import copy  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import fastbias  # noqa: E402
from fastbias.data import gaussian_dataset  # noqa: E402
from fastbias.engine import WIDE_GROUP, Problem  # noqa: E402
from fastbias.kernels import _gd  # noqa: E402

CONV_CASES = ((16, 32, 2), (16, 32, 4), (128, 128, 3), (256, 1024, 3))
OTHER_CASES = (("fc", 16, 32, 4), ("diag", 16, 32, 4))
BATCH_CASES = ((16, 32, 4), (128, 128, 3))
BATCH_SEEDS = 64
CHECK_STEPS = 100
CHECK_RTOL = 1e-8
GATHER_MAX_D = 128  # --quick: the time-domain variant by D (the faster one in full runs)

TARGETS = {
    "conv single run (16,32,4) <= 0.25 us/iter": ("conv", 16, 32, 4, 0.25),
    "conv (128,128,3) <= 2.5 us/iter": ("conv", 128, 128, 3, 2.5),
    "conv (256,1024,3) <= 80 us/iter": ("conv", 256, 1024, 3, 80.0),
}


# =========================================================================== the problem


class Case:
    """One (arch, N, D, L): the dataset, the initial weights (fastbias's
    initialization, seed 0), fastbias's prepared ``Problem`` and the step constants."""

    def __init__(self, arch, N, D, L, seed=0):
        self.arch, self.N, self.D, self.L = arch, N, D, L
        self.X, self.y = gaussian_dataset(N, D, seed=seed)
        self.problem = p = Problem(self.X, self.y, arch, L)
        self.w0 = p.init_weights(1.0 / math.sqrt(D), seed)  # (L, D) or a list of matrices
        self.theta0 = p.theta_from_weights(self.w0)
        self.Xy = self.y[:, None] * self.X
        beta0 = self.beta(self.w0)
        self.log_loss0 = float(_logsumexp(-(self.Xy @ beta0)))
        self.S0 = smoothness(self.magnitudes(self.w0), p.X2, p.Xh)
        self.eta_fixed = 0.5 / (math.exp(self.log_loss0) * self.S0)
        self.c_peer = 1.0 / self.S0
        self.name = f"{arch} ({N},{D},{L})"

    def beta(self, w):
        """beta = P(w) from time-domain weights, in NumPy."""
        if self.arch == "conv":
            return np.fft.irfft(np.prod(np.fft.rfft(np.asarray(w), axis=1), axis=0), self.D)
        if self.arch == "diag":
            return np.prod(np.asarray(w), axis=0)
        out = np.asarray(w[0])
        for W in w[1:]:
            out = out @ np.asarray(W)
        return out[:, 0]

    def magnitudes(self, w):
        """Layer magnitudes a_l of the README's bound S."""
        if self.arch == "conv":
            return np.max(np.abs(np.fft.rfft(np.asarray(w), axis=1)), axis=1)
        if self.arch == "diag":
            return np.max(np.abs(np.asarray(w)), axis=1)
        return np.array([np.linalg.norm(W) for W in w])


def _logsumexp(a):
    m = np.max(a)
    return m + np.log(np.sum(np.exp(a - m)))


def smoothness(a, X2, Xh):
    """S = X2 sum_l q_l^2 + Xh max_l sum_{k != l} prod_{j != l, k} a_j (README)."""
    L = len(a)
    q = np.array([np.prod(np.delete(a, l)) for l in range(L)])
    h = [sum(np.prod(np.delete(a, [l, k])) for k in range(L) if k != l) for l in range(L)]
    return float(X2 * np.sum(q * q) + Xh * max(h))


def _relerr(b, ref):
    return float(np.linalg.norm(np.asarray(b) - ref) / np.linalg.norm(ref))


# =========================================================================== fastbias


def fit_beta(case, steps, step="adaptive", step_size=None):
    """beta after ``fastbias.fit`` from the case's initial weights (and the Run)."""
    r = fastbias.fit(case.X, case.y, arch=case.arch, depth=case.L, steps=steps, step=step,
                     step_size=step_size, init=case.w0, record="last")
    return r.beta, r


class FastbiasFit:
    """``fastbias.fit(step="adaptive")`` per iteration: ``prepare()`` (untimed) copies
    a ``fit(steps=0)`` Run (validated data, separability LP, prepared Problem done);
    ``run(n)`` continues it by n steps (``Run.resume``, the same ``_drive`` as ``fit``:
    the initial point and the log-spaced history recorded). ``setup()`` times
    ``fit(steps=0)`` itself."""

    label = "fastbias"
    min_n = 10**4  # a run of many steps: the log-spaced records thin out as in real runs

    def __init__(self, case):
        self.case = case
        self.run0 = self.setup()

    def setup(self):
        c = self.case
        return fastbias.fit(c.X, c.y, arch=c.arch, depth=c.L, steps=0, init=c.w0)

    def prepare(self):
        self.r = copy.deepcopy(self.run0)

    def run(self, n):
        self.r.resume(n)
        return self.r.beta


class FastbiasRaw:
    """The compiled loop alone, from the case's initial ``theta``: ``_gd.gd_run``
    (``group=False``, the general lockstep loop with one run) or the loop ``fit``
    calls (``group=True``: ``_bins.gd_bins`` for diag/conv nets, ``_gd.gd_group``
    with one run for fc)."""

    def __init__(self, case, group, adaptive=True, step=1.0):
        self.case, self.group, self.adaptive, self.step = case, group, adaptive, step
        self.label = "fit loop" if group else "gd_run"

    def run(self, n):
        p = self.case.problem
        if self.group and p.family == _gd.PROD:
            theta = self.case.theta0.copy()
            stats = np.zeros(_gd.N_STATS)
            p.gd_bins(theta, _gd.EXP_LOSS, self.adaptive, self.step, n, stats)
        elif self.group:
            theta = self.case.theta0[None].copy()
            stats = np.zeros((1, _gd.N_STATS))
            _gd.gd_group(theta, *p.loop_args(), p.Z, p.pw, p.X2, p.Xh, _gd.EXP_LOSS, self.adaptive,
                         np.array([self.step]), n, stats)
            theta, stats = theta[0], stats[0]
        else:
            theta = self.case.theta0.copy()
            stats = np.zeros(_gd.N_STATS)
            _gd.gd_run(theta, *p.loop_args(), p.Z, p.pw, p.X2, p.Xh, _gd.EXP_LOSS, self.adaptive,
                       self.step, n, stats)
        self.stats = stats
        return p.beta_from_theta(theta)


# =========================================================================== PyTorch


def _torch():
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    return torch


class TorchEager:
    """PyTorch eager + autograd, time-domain net; ``run(n, fixed)`` returns beta."""

    def __init__(self, case, variant):
        torch = self.torch = _torch()
        self.case, self.variant = case, variant
        self.label = f"torch-{variant}" if case.arch == "conv" else "torch"
        D = case.D
        self.Xy = torch.tensor(case.Xy)
        if case.arch == "conv":
            j = torch.arange(D)
            self.idx = (j[:, None] - j[None, :]) % D  # C(w)[j, d] = w[(j - d) mod D]
        self.w0 = [torch.tensor(np.asarray(w)) for w in case.w0]

    def margins(self, ws):
        torch = self.torch
        H = self.Xy
        arch = self.case.arch
        for w in ws[:-1]:
            if arch == "conv":
                if self.variant == "gather":
                    H = H @ w[self.idx]
                else:
                    D = self.case.D
                    H = torch.fft.irfft(torch.fft.rfft(H) * torch.conj(torch.fft.rfft(w)), n=D)
            elif arch == "diag":
                H = H * w
            else:
                H = H @ w
        m = H @ ws[-1]
        return m[:, 0] if arch == "fc" else m

    def run(self, n, fixed=False):
        torch = self.torch
        ws = [w.clone().requires_grad_(True) for w in self.w0]
        c, eta = self.case.c_peer, self.case.eta_fixed
        for _ in range(n):
            log_loss = torch.logsumexp(-self.margins(ws), 0)
            grads = torch.autograd.grad(log_loss, ws)
            with torch.no_grad():
                # normalized GD: eta = c / L, so eta grad L = c grad log L
                s = eta * torch.exp(log_loss) if fixed else c
                for w, g in zip(ws, grads):
                    w.sub_(s * g)
        self.log_loss = float(log_loss.detach()) if n else self.case.log_loss0
        return self.case.beta([w.detach().numpy() for w in ws])


# =========================================================================== JAX


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


class JaxTimeDomain:
    """``jit`` + ``fori_loop`` + ``value_and_grad`` of the time-domain net."""

    def __init__(self, case, variant):
        jax = _jax()
        import jax.numpy as jnp

        self.case, self.variant = case, variant
        self.label = f"jax-td-{variant}" if case.arch == "conv" else "jax-td"
        D, arch = case.D, case.arch
        Xy = jnp.asarray(case.Xy)
        j = np.arange(D)
        idx = jnp.asarray((j[:, None] - j[None, :]) % D)

        def log_loss(ws):
            H = Xy
            for w in ws[:-1]:
                if arch == "conv":
                    if variant == "gather":
                        H = H @ w[idx]
                    else:
                        H = jnp.fft.irfft(jnp.fft.rfft(H) * jnp.conj(jnp.fft.rfft(w)), n=D)
                elif arch == "diag":
                    H = H * w
                else:
                    H = H @ w
            m = H @ ws[-1]
            if arch == "fc":
                m = m[:, 0]
            return jax.nn.logsumexp(-m)

        vg = jax.value_and_grad(log_loss)

        def loop(ws, n, fixed, c, eta):
            def body(i, carry):
                ws, _ = carry
                v, g = vg(ws)
                s = jnp.where(fixed, eta * jnp.exp(v), c)
                return tuple(w - s * gw for w, gw in zip(ws, g)), v

            return jax.lax.fori_loop(0, n, body, (ws, jnp.asarray(case.log_loss0)))

        self.loop = jax.jit(loop)
        self.w0 = tuple(jnp.asarray(np.asarray(w)) for w in case.w0)

    def run(self, n, fixed=False):
        ws, v = self.loop(self.w0, n, fixed, self.case.c_peer, self.case.eta_fixed)
        v.block_until_ready()
        self.log_loss = float(v)
        return self.case.beta([np.asarray(w) for w in ws])


class JaxOurs:
    """fastbias's frequency-domain iteration in JAX (``jit`` + ``fori_loop``).

    ``cert=False``: the plain update with the adaptive ``mult = c / (sa S(a))``;
    ``cert=True``: also fastbias's certification on the segment and loss guard."""

    def __init__(self, case, cert):
        jax = _jax()
        import jax.numpy as jnp
        from jax import lax

        self.case, self.cert = case, cert
        self.label = "jax-ours+cert" if cert else "jax-ours"
        p = case.problem
        L = case.L
        conv = case.arch == "conv"
        if conv:
            Z = jnp.asarray(case.y[:, None] * p.pw * np.fft.rfft(case.X, axis=1))
            W0 = jnp.asarray(np.fft.rfft(np.asarray(case.w0), axis=1))
        else:  # diag: the identity in place of the DFT
            Z = jnp.asarray(case.Xy)
            W0 = jnp.asarray(np.asarray(case.w0))
        pw = jnp.asarray(p.pw)
        ipw = 1.0 / pw
        X2, Xh = p.X2, p.Xh
        self.conv = conv

        def margin_pass(W):
            b = W[0]
            for l in range(1, L):
                b = b * W[l]
            m = jnp.real(Z @ jnp.conj(b))  # Re <Z_n, b> = y_n <x_n, beta> (Parseval)
            a = -m
            Ma = jnp.max(a)
            e = jnp.exp(a - Ma)
            return e @ Z, Ma, jnp.sum(e)

        def direction(W, G):
            Gs = G * ipw
            pre = [jnp.ones_like(W[0])]
            for l in range(L - 1):
                pre.append(pre[-1] * W[l])
            suf = [jnp.ones_like(W[0])]
            for l in range(L - 1, 0, -1):
                suf.append(suf[-1] * W[l])
            suf = suf[::-1]
            U = jnp.stack([Gs * jnp.conj(pre[l] * suf[l]) for l in range(L)])
            a = jnp.max(jnp.abs(W), axis=1)
            return U, a

        def smooth(a):
            P = jnp.prod(a)
            T = jnp.sum(1.0 / a)
            q = P / a
            g = jnp.sum(q * q)
            return X2 * g + Xh * jnp.max(q * (T - 1.0 / a)), jnp.sqrt(X2 * g)

        def plain(W, G, Ma, sa, fixed, c, eta):
            U, a = direction(W, G)
            mult = jnp.where(fixed, eta * jnp.exp(Ma), c / (sa * smooth(a)[0]))
            W = W + mult * U
            return (W,) + margin_pass(W)

        def certified(W, G, Ma, sa, fixed, c, eta):
            U, a = direction(W, G)
            um = jnp.max(jnp.abs(U), axis=1)
            u2 = jnp.sum(pw * jnp.abs(U) ** 2)
            log_loss = Ma + jnp.log(sa)

            def uncertified(mult):
                Sb, Gb = smooth(a + mult * um)
                x = Gb * mult * jnp.sqrt(u2)
                grow = jnp.where(x < 0.5, 1.0 / (1.0 - x), jnp.exp(x))
                return mult * sa * Sb * grow >= 1.999

            mult = c / (sa * smooth(a)[0])
            mult = lax.while_loop(uncertified, lambda m: 0.5 * m, mult)
            mult = jnp.where(fixed, eta * jnp.exp(Ma), mult)

            def trial(mult):
                Wn = W + mult * U
                Gn, Man, san = margin_pass(Wn)
                return mult, Wn, Gn, Man, san, 0

            def rejected(st):
                mult, Wn, Gn, Man, san, tries = st
                return (~fixed) & ~(Man + jnp.log(san) <= log_loss) & (tries <= 200)

            def halve(st):
                out = trial(0.5 * st[0])
                return out[:-1] + (st[-1] + 1,)

            _, Wn, Gn, Man, san, _ = lax.while_loop(rejected, halve, trial(mult))
            return Wn, Gn, Man, san

        update = certified if cert else plain

        def loop(W, n, fixed, c, eta):
            def body(i, carry):
                return update(*carry, fixed, c, eta)

            return lax.fori_loop(0, n, body, (W,) + margin_pass(W))

        self.loop = jax.jit(loop)
        self.W0 = W0

    def run(self, n, fixed=False):
        W, G, Ma, sa = self.loop(self.W0, n, fixed, 1.0, self.case.eta_fixed)
        sa.block_until_ready()
        self.log_loss = float(Ma + np.log(float(sa)))
        b = np.prod(np.asarray(W), axis=0)
        return np.fft.irfft(b, self.case.D) if self.conv else b


# =========================================================================== checks


def check(case, impls):
    """100 fixed-step iterations of every implementation against fastbias (beta to
    CHECK_RTOL), and the adaptive JAX-ours variants against adaptive fastbias.
    Returns {label: relative error} and the adaptive halvings of fastbias."""
    ref, _ = fit_beta(case, CHECK_STEPS, step="fixed", step_size=case.eta_fixed)
    errs = {}
    for im in impls:
        if isinstance(im, FastbiasFit):
            continue
        if isinstance(im, FastbiasRaw):
            got = FastbiasRaw(case, im.group, adaptive=False, step=case.eta_fixed).run(CHECK_STEPS)
        else:
            got = im.run(CHECK_STEPS, fixed=True)
        errs[im.label] = _relerr(got, ref)
    ref_a, run_a = fit_beta(case, CHECK_STEPS)
    fb = FastbiasFit(case)
    fb.prepare()
    errs["fastbias resume (adaptive)"] = _relerr(fb.run(CHECK_STEPS), ref_a)
    for im in impls:
        if isinstance(im, JaxOurs):
            errs[im.label + " (adaptive)"] = _relerr(im.run(CHECK_STEPS), ref_a)
    return errs, run_a.halvings


# =========================================================================== timing


def _timed(impl, n):
    prepare = getattr(impl, "prepare", None)
    if prepare is not None:
        prepare()
    t0 = time.perf_counter()
    impl.run(n)
    return time.perf_counter() - t0


def _calibrate(impl, min_sample_s):
    """Iterations for one sample to last at least ``min_sample_s`` (the better of
    two tries at each n, so that one stall does not stop the search early), and at
    least ``impl.min_n``."""
    n = getattr(impl, "min_n", 1)
    while True:
        t = min(_timed(impl, n), _timed(impl, n))
        if t >= min_sample_s:
            return n
        n = max(n + 1, int(n * min(8.0, 1.3 * min_sample_s / max(t, 1e-9))))


def measure(impls, repeats, min_sample_s, fixed_cost=None, same_n=None):
    """{label: seconds per iteration}: min over interleaved repeats of sample / n,
    and the iterations per sample.

    ``impls`` have ``label``, ``run(n)`` (n iterations from the initial state) and
    optionally ``prepare()`` (untimed, before each sample). ``fixed_cost`` maps
    labels to the seconds of a call with no iterations, subtracted from the sample
    (its n is then large enough for the fixed cost to be at most 1/5 of a sample).
    ``same_n`` maps a label to another whose n it takes (not calibrated itself)."""
    fixed_cost = fixed_cost or {}
    same_n = same_n or {}
    for im in impls:  # compile / warm the caches
        _timed(im, 1)
        _timed(im, 2)
    inner = {im.label: _calibrate(im, max(min_sample_s, 5 * fixed_cost.get(im.label, 0.0)))
             for im in impls if im.label not in same_n}
    for im in impls:
        if im.label in same_n:
            inner[im.label] = inner[same_n[im.label]]
    best = {im.label: math.inf for im in impls}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            k = r % len(impls)
            for im in impls[k:] + impls[:k]:
                best[im.label] = min(best[im.label], _timed(im, inner[im.label]))
    finally:
        if gc_was:
            gc.enable()
    return {k: (best[k] - fixed_cost.get(k, 0.0)) / inner[k] for k in best}, inner


def min_time(fn, repeats):
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# =========================================================================== one case


def impls_for(case, variants):
    out = [FastbiasFit(case), FastbiasRaw(case, group=False), FastbiasRaw(case, group=True)]
    if case.arch == "conv":
        for v in variants:
            out.append(TorchEager(case, v))
        for v in variants:
            out.append(JaxTimeDomain(case, v))
    else:
        out += [TorchEager(case, None), JaxTimeDomain(case, None)]
    if case.arch != "fc":
        out += [JaxOurs(case, cert=False), JaxOurs(case, cert=True)]
    return out


def run_case(case, variants, repeats, min_sample_s, log):
    impls = impls_for(case, variants)
    t0 = time.perf_counter()
    errs, halvings = check(case, impls)
    bad = {k: e for k, e in errs.items() if not e <= CHECK_RTOL and not (k.endswith("(adaptive)") and halvings)}
    if bad:
        raise AssertionError(f"{case.name}: implementations disagree with fastbias on beta after "
                             f"{CHECK_STEPS} steps (relative errors {bad})")
    log(f"{case.name}: checked in {time.perf_counter() - t0:.1f} s (max rel. beta diff "
        f"{max(errs.values()):.1e}; fastbias adaptive halvings in {CHECK_STEPS} steps: {halvings})")
    t0 = time.perf_counter()
    per_iter, inner = measure(impls, repeats, min_sample_s,
                              same_n={"fit loop": "gd_run"})
    setup = min_time(impls[0].setup, max(3, repeats))
    diverged = [im.label for im in impls if hasattr(im, "log_loss") and not math.isfinite(im.log_loss)]
    log(f"{case.name}: timed in {time.perf_counter() - t0:.1f} s (iterations per sample: "
        + ", ".join(f"{k} {v}" for k, v in inner.items()) + ")"
        + (f"; non-finite loss at the end of the timed run: {', '.join(diverged)}" if diverged else ""))
    return dict(per_iter=per_iter, setup=setup, errs=errs, halvings=halvings, inner=inner, diverged=diverged)


# =========================================================================== long and batched runs


def long_run(steps, repeats):
    """Wall seconds of ``fit(conv, depth 4, (16,32), steps)`` (min over repeats), and the Run."""
    case = Case("conv", 16, 32, 4)
    runs = []

    def go():
        runs.append(fastbias.fit(case.X, case.y, arch="conv", depth=4, steps=steps))

    return min_time(go, repeats), runs[-1]


class FitMany:
    """``fit_many`` with BATCH_SEEDS seeds sharing one dataset, ``record="last"``."""

    def __init__(self, X, y, L, threads):
        self.X, self.y, self.L, self.threads = X, y, L, threads
        self.label = threads

    def run(self, n):
        return fastbias.fit_many(self.X, self.y, arch="conv", depth=self.L, seeds=range(BATCH_SEEDS), steps=n,
                                 threads=self.threads, record="last")


def batched(N, D, L, repeats, min_sample_s):
    """{threads: seconds per run-iteration}, setup seconds, bitwise equality."""
    X, y = gaussian_dataset(N, D, seed=0)
    impls = [FitMany(X, y, L, 1), FitMany(X, y, L, 2)]
    setup = {im.label: min_time(lambda: im.run(0), 3) for im in impls}
    per_iter, inner = measure(impls, repeats, min_sample_s, fixed_cost=setup)
    same = all(np.array_equal(a.beta, b.beta) for a, b in zip(impls[0].run(50), impls[1].run(50)))
    return {t: v / BATCH_SEEDS for t, v in per_iter.items()}, setup, same


# =========================================================================== report


def _us(t):
    us = t * 1e6
    return f"{us:.3g}" if us < 100 else f"{us:,.0f}"


def _pick(per_iter, prefix):
    """The fastest variant among labels starting with ``prefix``: (label, time)."""
    cands = {k: v for k, v in per_iter.items() if k.startswith(prefix) and not k.startswith(prefix + "+")}
    if not cands:
        return None, None
    k = min(cands, key=cands.get)
    return k, cands[k]


def _loadavg():
    try:
        return "load average %.1f %.1f %.1f" % os.getloadavg()
    except OSError:
        return "load average n/a"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, one time-domain variant per size (< 60 s)")
    ap.add_argument("--repeats", type=int, help="interleaved samples per implementation (default 9; quick 3)")
    ap.add_argument("--sample-ms", type=float, help="minimum milliseconds per sample (default 30; quick 10)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    min_sample_s = (args.sample_ms or (10.0 if args.quick else 30.0)) / 1e3
    t_start = time.perf_counter()
    load_start = _loadavg()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:5.1f} s] {msg}", file=sys.stderr, flush=True)

    import jax
    import numba
    import torch

    _torch()
    _jax()
    fastbias.fit(*gaussian_dataset(8, 8, seed=0), arch="conv", depth=2, steps=2)  # load the compiled loops
    results = {}
    for N, D, L in CONV_CASES:
        variants = (("gather" if D <= GATHER_MAX_D else "fft"),) if args.quick else ("gather", "fft")
        results["conv", N, D, L] = run_case(Case("conv", N, D, L), variants, repeats, min_sample_s, log)
    for arch, N, D, L in OTHER_CASES:
        results[arch, N, D, L] = run_case(Case(arch, N, D, L), (), repeats, min_sample_s, log)
    t_long, r_long = long_run(10**6, 1 if args.quick else 3)
    log(f"10^6 steps: {t_long:.2f} s")
    batch = {}
    for N, D, L in BATCH_CASES:
        batch[N, D, L] = batched(N, D, L, repeats, max(min_sample_s, 0.1 if args.quick else 0.3))
        log(f"batched ({N},{D},{L}) done")
    elapsed = time.perf_counter() - t_start

    out = []
    p = out.append
    p("# fastbias engine vs PyTorch and JAX (float64, exp loss, one CPU thread)")
    p("")
    p(f"`python benchmarks/peers.py{' --quick' if args.quick else ''}`: fastbias {fastbias.__version__}, "
      f"numba {numba.__version__}, torch {torch.__version__}, "
      f"jax {jax.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs "
      f"({load_start} at the start, {_loadavg()} at the end); {repeats} interleaved repeats, "
      f">= {min_sample_s * 1e3:g} ms per sample, min over repeats; total {elapsed:.0f} s.")
    p("")
    p("µs per iteration. `fit`: `fastbias.fit(step=\"adaptive\")` per iteration with its history recording "
      "(`Run.resume(n)` of a `fit(steps=0)` run; one run on the calling thread, like the peers); "
      "`setup ms`: `fit(steps=0)` (validation, the separability LP, the prepared data); `gd_run`, "
      "`fit loop`: the compiled loops alone, called directly (`gd_run`: the general lockstep loop with one run; "
      "`fit loop`: the loop `fit` calls, `_bins.gd_bins` for diag/conv, `gd_group` with one run for fc). "
      "`torch` (eager + autograd) and `jax-td` (jit + fori_loop + grad): the time-domain net, normalized-GD "
      "steps, the faster of the gather/fft variants (named). `jax-ours`: fastbias's frequency-domain "
      "iteration in JAX without the segment certification and guard; `+cert`: with them. "
      "Ratios: peer / `fit`. † the peer's loss became non-finite within the timed iterations "
      "(constant-c normalized GD blows up at depth >= 2).")
    p("")
    p("| net (N,D,L) | fit | gd_run | fit loop | setup ms | torch | jax-td | jax-ours | "
      "jax-ours+cert | torch/fit | jax-td/fit | jax-ours/fit | +cert/fit |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, res in results.items():
        arch, N, D, L = key
        t = res["per_iter"]
        fit = t["fastbias"]
        tk, tt = _pick(t, "torch")
        jk, jt = _pick(t, "jax-td")
        ours, cert = t.get("jax-ours"), t.get("jax-ours+cert")

        def cell(label, v):
            if v is None:
                return "—"
            tag = label.rsplit("-", 1)[-1] if label.endswith(("-gather", "-fft")) else ""
            return _us(v) + (f" ({tag})" if tag else "") + (" †" if label in res["diverged"] else "")

        def ratio(v):
            return "—" if v is None else f"{v / fit:.1f}"

        p(f"| {arch} ({N},{D},{L}) | {_us(fit)} | {_us(t['gd_run'])} | "
          f"{_us(t['fit loop'])} | {res['setup'] * 1e3:.1f} | {cell(tk, tt)} | {cell(jk, jt)} | "
          f"{cell('jax-ours', ours)} | {cell('jax-ours+cert', cert)} | "
          f"{ratio(tt)} | {ratio(jt)} | {ratio(ours)} | {ratio(cert)} |")
    if not args.quick:
        p("")
        p("Time-domain variants (µs/iter): " + "; ".join(
            f"({k[1]},{k[2]},{k[3]}) " + ", ".join(
                f"{lab} {_us(v)}" for lab, v in res["per_iter"].items() if lab.startswith(("torch-", "jax-td-")))
            for k, res in results.items() if k[0] == "conv") + ".")
    p("")
    fixed_errs = {k: max(v for kk, v in res["errs"].items() if "adaptive" not in kk) for k, res in results.items()}
    ad_errs = {k: max(v for kk, v in res["errs"].items() if "adaptive" in kk) for k, res in results.items()}
    p(f"Checks (before timing): after {CHECK_STEPS} fixed steps from the same weights, every peer, `gd_run` "
      f"and `fit loop` agree with `fastbias.fit(step=\"fixed\")` on beta to max relative difference "
      f"{max(fixed_errs.values()):.0e}; after {CHECK_STEPS} adaptive steps `Run.resume`, jax-ours and "
      f"jax-ours+cert agree with `fastbias.fit` to {max(ad_errs.values()):.0e} "
      f"(fastbias halved no step: {all(res['halvings'] == 0 for res in results.values())}).")
    p("")
    p(f"Long run: `fastbias.fit(X, y, arch=\"conv\", depth=4, steps=10**6)` at (16,32): {t_long:.2f} s wall "
      f"({len(r_long.history)} history rows, log L = {r_long.log_loss:.4g}).")
    p("")
    p(f"Batched: `fit_many` with {BATCH_SEEDS} seeds sharing one dataset (conv, `record=\"last\"`), "
      f"{BATCH_SEEDS // WIDE_GROUP} lockstep groups of {WIDE_GROUP} runs on a pool of `threads` workers, "
      "µs per run-iteration ((T(steps=n) - T(steps=0)) / (64 n)):")
    p("")
    p("| (N,D,L) | threads=1 | threads=2 | 2-thread speedup | setup ms | results equal across threads |")
    p("|---|---:|---:|---:|---:|---|")
    for (N, D, L), (t, setup, same) in batch.items():
        p(f"| ({N},{D},{L}) | {_us(t[1])} | {_us(t[2])} | {t[1] / t[2]:.2f} | {setup[1] * 1e3:.1f} | "
          f"{'bitwise' if same else 'NO'} |")
    p("")
    p("Targets:")
    p("")

    def tick(ok):
        return "x" if ok else " "

    conv = {k[1:]: v["per_iter"] for k, v in results.items() if k[0] == "conv"}
    t4 = conv[16, 32, 4]
    p(f"- [{tick(t4['fastbias'] <= 0.25e-6)}] conv (16,32,4) <= 0.25 µs/iter: fit {_us(t4['fastbias'])}, "
      f"fit loop {_us(t4['fit loop'])}")
    r = t4["jax-ours"] / t4["fastbias"]
    p(f"- [{tick(r >= 4)}] conv (16,32,4) >= 4x jax-ours: {r:.1f}x (jax-ours / fit loop "
      f"{t4['jax-ours'] / t4['fit loop']:.1f}x; jax-ours+cert / fit {t4['jax-ours+cert'] / t4['fastbias']:.1f}x)")
    for (N, D, L), lim in (((128, 128, 3), 2.5), ((256, 1024, 3), 80.0)):
        t = conv[N, D, L]
        p(f"- [{tick(t['fastbias'] <= lim * 1e-6)}] conv ({N},{D},{L}) <= {lim:g} µs/iter: fit {_us(t['fastbias'])}, "
          f"fit loop {_us(t['fit loop'])}")
    p(f"- [{tick(t_long <= 0.3)}] 10^6 iterations at (16,32,4) <= 0.3 s: {t_long:.2f} s")
    for (N, D, L), lim in (((16, 32, 4), 0.1), ((128, 128, 3), 1.5)):
        t = batch[N, D, L][0]
        p(f"- [{tick(min(t.values()) <= lim * 1e-6)}] batched 64 runs ({N},{D},{L}) <= {lim:g} µs per "
          f"run-iteration: threads=1 {_us(t[1])}, threads=2 {_us(t[2])}")
    for (N, D, L), (t, _, _) in batch.items():
        p(f"- [{tick(t[1] / t[2] >= 1.7)}] two threads >= 1.7x one thread at ({N},{D},{L}): {t[1] / t[2]:.2f}x")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
