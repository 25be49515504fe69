"""Reproduce the paper's claims: ``fastbias paper``.

Gunasekar, Lee, Soudry, Srebro (2018) predict the limit direction of gradient descent
on linear networks (see the README, "Theory"):

* Theorem 1: fully connected nets of any depth (and the linear predictor) -> the l2 SVM;
* Theorem 2: conv nets of depth 2 -> ``min ||beta_hat||_1`` (eq. 9);
* Theorem 2a: conv nets of depth L > 2 -> a first-order stationary point of
  ``min ||beta_hat||_{2/L}`` (eq. 10);
* Lemma 6 with eq. (15): diagonal nets -> ``min ||beta||_{2/L}`` (l1 for L = 2).

``run_paper(config, out)`` generates separable datasets, runs GD with certified adaptive
steps for every architecture and depth (``fastbias.fit_many``, batched over datasets of
one shape and initialization seeds), compares every run with ``fastbias.theory.predicted``
and writes ``report.json``, ``report.md`` and three figures to ``out``.

How the measures are recorded: each batch passes the D coordinate vectors as
``references``, so the history's ``cos_e<d>`` columns times ``beta_norm`` are the
predictor ``beta_t`` itself at every recorded step (about 20 per decade). Every measure
(1 - cos to any prediction, normalized margins, KKT certificates, coefficient counts) is
then evaluated on those exact history points after the run. (``fit_many`` shares its
references between the stacked datasets, so dataset-specific predictions cannot be
references there; the coordinate basis serves all of them.)

This module imports cvxpy (through ``fastbias.theory``) and matplotlib (through
``fastbias.plot``) only when ``run_paper`` runs; ``import fastbias`` does not import it.
"""

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DatasetSpec", "Config", "config", "run_paper", "fourier_teacher", "significant_count",
           "SETUPS", "THRESHOLDS"]

SETUPS = (("linear", 1), ("fc", 2), ("fc", 3), ("fc", 4), ("diag", 2), ("diag", 3), ("diag", 4),
          ("conv", 2), ("conv", 3), ("conv", 4), ("conv", 5))
"""Every (architecture, depth) the paper job runs."""

THRESHOLDS = {
    "svm_direction": 1e-4,   # Theorem 1: 1 - cos(beta_T, beta*_l2)
    "closer_ratio": 0.1,     # L = 2: (1 - cos to beta*) / (1 - cos to the SVM)
    "approach_slope": -0.1,  # L = 2: log-log slope of 1 - cos to beta* over the last decade (and the
                             # slope a KKT residual above "kkt" must beat to count as falling)
    "kkt": 1e-3,             # L > 2: relative KKT residual of (10) / (15)
}
"""The claims' thresholds (see ``_threshold_reasons`` for why each)."""

MASS = 0.99
"""``significant_count`` counts the largest coefficients that carry this share of ``||.||_1``."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DatasetSpec:
    """A separable dataset: ``n`` Gaussian samples in ``d`` dimensions, labelled by a
    Gaussian teacher (``teacher="gaussian"``) or by a teacher with ``k`` nonzero
    frequencies (``teacher="fourier"``, see ``fourier_teacher``)."""

    name: str
    n: int
    d: int
    seed: int
    teacher: str = "gaussian"
    k: int = 2

    def make(self):
        from fastbias.data import gaussian_dataset

        if self.teacher == "gaussian":
            return gaussian_dataset(self.n, self.d, self.seed)
        return gaussian_dataset(self.n, self.d, self.seed, teacher=fourier_teacher(self.d, self.k, self.seed))


@dataclass
class Config:
    """What ``run_paper`` runs.

    Attributes
    ----------
    name : "full", "quick" or "smoke" (recorded in the report)
    datasets : tuple of DatasetSpec
    init_seeds : initialization seeds, each run on every dataset
    steps : {(arch, depth): GD steps}
    init_scale : {arch: standard deviation of the initial weights, None for the engine's 1/sqrt(D)}
    figure_dataset : name of the dataset drawn in the beta figure
    kkt_per_decade : KKT certificates evaluated per decade of steps
    side_checks : run the side measurement of fc L = 4 at the default initialization
    """

    name: str
    datasets: tuple
    init_seeds: tuple
    steps: dict
    init_scale: dict
    figure_dataset: str
    kkt_per_decade: int = 4
    side_checks: bool = True
    seed: int = 0

    def as_dict(self):
        return {
            "name": self.name,
            "seed": self.seed,
            "datasets": [asdict(d) for d in self.datasets],
            "init_seeds": list(self.init_seeds),
            "steps": {f"{a}-{L}": int(s) for (a, L), s in self.steps.items()},
            "init_scale": {a: ("1/sqrt(D)" if s is None else s) for a, s in self.init_scale.items()},
            "figure_dataset": self.figure_dataset,
            "kkt_per_decade": self.kkt_per_decade,
            "side_checks": self.side_checks,
        }


# Initial weights: fc nets start small. 1 - cos to the SVM falls as t^(-2/L) from any
# initial scale, but the part of the initial weights that GD never moves (for N < D the
# components of W_1 outside the span of the data, exactly) adds a transient that grows with
# the scale (the report's side check measures it for L = 4). diag and conv keep the engine's
# 1/sqrt(D): small initializations park deep diagonal nets at saddles (one coefficient
# learned, the others ~0) for more than 1e6 steps (diag L = 4 at 0.01 did not separate the
# data after 1e6 steps), and conv L = 2..5 fared no better overall in a scan of 0.1-0.01.
INIT_SCALE = {"linear": 0.01, "fc": 0.01, "diag": None, "conv": None}


def _steps(linear, fc2, fc3, fc4, prod):
    s = {("linear", 1): linear, ("fc", 2): fc2, ("fc", 3): fc3, ("fc", 4): fc4}
    for a in ("diag", "conv"):
        for L in (2, 3, 4, 5):
            s[(a, L)] = prod
    return {k: v for k, v in s.items() if k in SETUPS}


def config(kind="full", seed=0):
    """The built-in configurations.

    * ``"full"``: five datasets (three 12 x 16 Gaussian, one 32 x 16 with N > D, one 12 x 16
      labelled by a teacher with two frequencies), two initializations each; up to 3e7 steps.
    * ``"quick"``: three datasets (12 x 16, 32 x 16, the Fourier teacher), one
      initialization, fewer steps (about a minute of GD on two cores).
    * ``"smoke"``: two tiny datasets, a few hundred steps: exercises every code path in
      seconds; its numbers confirm nothing.

    ``seed`` shifts every dataset and initialization seed (datasets ``1000 seed + i``).
    """
    if kind not in ("full", "quick", "smoke"):
        raise ValueError(f"kind must be 'full', 'quick' or 'smoke', got {kind!r}")
    b = 1000 * int(seed)
    if kind == "smoke":
        ds = (DatasetSpec("g6x8", 6, 8, b), DatasetSpec("f6x8", 6, 8, b + 1, "fourier", 1))
        return Config("smoke", ds, (b,), _steps(200, 200, 200, 200, 200), dict(INIT_SCALE), "f6x8",
                      kkt_per_decade=2, side_checks=False, seed=seed)
    fourier = DatasetSpec("fourier-12x16", 12, 16, b + 4, "fourier", 2)
    if kind == "quick":
        ds = (DatasetSpec("gauss-12x16-a", 12, 16, b), DatasetSpec("gauss-32x16", 32, 16, b + 3), fourier)
        return Config("quick", ds, (b,), _steps(10**5, 10**6, 3 * 10**6, 3 * 10**6, 3 * 10**6), dict(INIT_SCALE),
                      fourier.name, kkt_per_decade=3, side_checks=False, seed=seed)
    ds = (DatasetSpec("gauss-12x16-a", 12, 16, b), DatasetSpec("gauss-12x16-b", 12, 16, b + 1),
          DatasetSpec("gauss-12x16-c", 12, 16, b + 2), DatasetSpec("gauss-32x16", 32, 16, b + 3), fourier)
    return Config("full", ds, (b, b + 1), _steps(10**5, 10**6, 10**7, 6 * 10**7, 10**7), dict(INIT_SCALE),
                  fourier.name, seed=seed)


def fourier_teacher(d, k, seed):
    """A real teacher with ``k`` nonzero frequency pairs: ``sum_j cos(2 pi f_j p / d + phi_j)``
    with distinct ``f_j`` drawn from 1 .. (d - 1) // 2 and uniform phases."""
    rng = np.random.default_rng([int(seed), 7919])
    freqs = rng.choice(np.arange(1, (d - 1) // 2 + 1), size=min(k, (d - 1) // 2), replace=False)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=len(freqs))
    p = np.arange(d)
    return np.sum([np.cos(2 * np.pi * f * p / d + ph) for f, ph in zip(freqs, phases)], axis=0)


# --------------------------------------------------------------------------- measures


def _coefficients(B, domain):
    """|T beta| along the last axis: unitary DFT moduli (all D) or absolute coordinates."""
    B = np.asarray(B, dtype=np.float64)
    if domain == "fourier":
        return np.abs(np.fft.fft(B, axis=-1)) / math.sqrt(B.shape[-1])
    return np.abs(B)


def significant_count(beta, domain="fourier", mass=MASS):
    """The number of largest coefficients (unitary Fourier, all D, or coordinates) that carry
    ``mass`` of ``||T beta||_1``; works along the last axis of a stack."""
    z = -np.sort(-_coefficients(beta, domain), axis=-1)
    c = np.cumsum(z, axis=-1)
    target = mass * c[..., -1:]
    # the tiny relative slack keeps an exactly sparse vector's count independent of rounding
    return np.sum(c < target * (1 - 1e-12), axis=-1) + 1


def _penalty(B, p, domain):
    z = _coefficients(B, domain)
    return np.sum(z ** p, axis=-1) ** (1.0 / p)


def _one_minus_cos(B, ref):
    """1 - cos between the rows of B and ref, without cancellation: ||u - v||^2 / 2."""
    U = B / np.linalg.norm(B, axis=-1, keepdims=True)
    v = ref / np.linalg.norm(ref)
    return 0.5 * np.sum((U - v) ** 2, axis=-1)


def _slope(steps, values, last_decades=1.0):
    """Least-squares slope of log(value) against log(step) over the last ``last_decades``."""
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    ok = (steps >= steps[-1] * 10.0 ** (-last_decades)) & np.isfinite(values) & (values > 0) & (steps > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log10(steps[ok]), np.log10(values[ok]), 1)[0])


def _steps_to(value, slope, threshold, steps):
    """Steps at which ``value`` reaches ``threshold`` if it keeps falling as t^slope."""
    if not (math.isfinite(value) and math.isfinite(slope)) or value <= threshold:
        return float(steps)
    if slope >= 0:
        return math.inf
    log_t = math.log10(steps) + math.log10(threshold / value) / slope
    return 10.0 ** log_t if log_t < 300 else math.inf


def _eval_rows(steps, per_decade):
    """Indices of history rows about ``per_decade`` per decade of steps, plus the last."""
    steps = np.asarray(steps)
    last = len(steps) - 1
    if steps[-1] <= 0:
        return [last]
    k = np.arange(0, math.ceil(math.log10(steps[-1]) * per_decade) + 1)
    targets = 10.0 ** (k / per_decade)
    idx = np.clip(np.searchsorted(steps, targets), 1, last)
    return sorted(set(int(i) for i in idx) | {last})


# --------------------------------------------------------------------------- predictions


def _expectation(arch, depth):
    """(penalty name, p, domain, claim) of the paper's prediction for (arch, depth)."""
    if arch in ("linear", "fc") or depth == 1:
        return "l2", 2.0, "primal", "Theorem 1"
    domain = "fourier" if arch == "conv" else "primal"
    if arch == "conv":
        return ("fourier_l1" if depth == 2 else f"fourier_l{2}/{depth}"), 2.0 / depth, domain, (
            "Theorem 2" if depth == 2 else "Theorem 2a")
    return ("l1" if depth == 2 else f"l{2}/{depth}"), 2.0 / depth, domain, "Lemma 6"


class _DatasetTheory:
    """The convex predictions of one dataset, computed once."""

    def __init__(self, spec, X, y):
        from fastbias import theory

        self.spec, self.X, self.y = spec, X, y
        self.A = y[:, None] * X
        self.convex = {}
        for arch, depth in (("fc", 2), ("diag", 2), ("conv", 2)):
            self.convex[(arch, depth)] = theory.predicted(X, y, arch, depth)
        self.svm = self.convex[("fc", 2)].beta

    def predicted(self, arch, depth, start):
        """(beta*, how, 1 - cos of theory.predicted(start) to start or None).

        For L > 2 the theorem names no particular stationary point of the nonconvex problem,
        so beta* is the one nearest ``start`` among two that the theory layer finds from it:
        ``theory.predicted(..., start=start)`` (IRL1 from a smoothing eps = 1e-2 max|T beta|,
        which can leave a certified point for another stationary point) and
        ``theory.stationary_point(..., start=start, eps_start=1e-9, eps_stop=1e-12)`` (stays at a
        certified point: measured 1 - cos <= 1e-8 wherever the certificate is below 1e-4)."""
        from fastbias import theory

        if arch in ("linear", "fc"):
            return self.convex[("fc", 2)].beta, "theory.predicted", None
        if depth == 2:
            return self.convex[(arch, 2)].beta, "theory.predicted", None
        pred = theory.predicted(self.X, self.y, arch, depth, start=start)
        domain = "fourier" if arch == "conv" else "primal"
        local = theory.stationary_point(self.X, self.y, 2.0 / depth, domain, start=start,
                                        eps_start=1e-9, eps_stop=1e-12)
        d_pred = float(_one_minus_cos(start[None], pred.beta)[0])
        d_local = float(_one_minus_cos(start[None], local.beta)[0])
        if d_pred <= d_local:
            return pred.beta, "theory.predicted(start=beta_T)", d_pred
        return local.beta, "theory.stationary_point(start=beta_T, eps_start=1e-9)", d_pred


# --------------------------------------------------------------------------- one run


def _analyze(run, dt, arch, depth, per_decade):
    """Every measure of one run on its history rows; returns a plain dict."""
    from fastbias import theory

    h = run.history
    D = dt.X.shape[1]
    steps = h["step"].astype(np.int64)
    B = np.stack([h[f"cos_e{d}"] for d in range(D)], axis=1) * h["beta_norm"][:, None]
    beta_T = B[-1]
    pen, p, domain, claim = _expectation(arch, depth)
    separated = bool(np.min(dt.A @ beta_T) > 0)
    beta_star, how, d_pred = (dt.predicted(arch, depth, beta_T) if (separated or depth <= 2 or arch in ("linear", "fc"))
                              else (None, "beta_T does not separate the data", None))
    margins = np.min(B @ dt.A.T, axis=1)
    series = {"step": steps, "min_margin": margins, "log_loss": h["log_loss"]}
    if beta_star is not None:
        series["one_minus_cos"] = _one_minus_cos(B, beta_star)
        gamma = margins / _penalty(B, p, domain)
        gamma_star = float(np.min(dt.A @ beta_star) / _penalty(beta_star, p, domain))
        series["gamma"] = gamma
        series["margin_gap"] = 1.0 - gamma / gamma_star
    else:
        gamma_star = math.nan
    series["one_minus_cos_svm"] = _one_minus_cos(B, dt.svm)
    series["count_fourier"] = significant_count(B, "fourier")
    series["count_primal"] = significant_count(B, "primal")
    kkt_steps, kkt_vals, kkt_part = [], [], []
    if p <= 1.0:  # on fixed rows (NaN where beta_t does not separate yet), aligned across runs
        for i in _eval_rows(steps, per_decade):
            kkt_steps.append(int(steps[i]))
            if margins[i] <= 0:
                kkt_vals.append(math.nan)
                kkt_part.append(None)
                continue
            cert = theory.kkt_residual(dt.X, dt.y, B[i], p, domain)
            kkt_vals.append(float(cert.residual))
            kkt_part.append(max(cert.parts, key=cert.parts.get))
    T = int(steps[-1])
    fin = {
        "steps": T,
        "status": run.status,
        "log_loss": float(h["log_loss"][-1]),
        "separates": separated,
        "one_minus_cos_svm": float(series["one_minus_cos_svm"][-1]),
        "count_fourier": int(series["count_fourier"][-1]),
        "count_primal": int(series["count_primal"][-1]),
        "gamma_star": gamma_star,
    }
    if beta_star is not None:
        fin.update({
            "one_minus_cos": float(series["one_minus_cos"][-1]),
            "slope_one_minus_cos": _slope(steps, series["one_minus_cos"]),
            "gamma": float(series["gamma"][-1]),
            "margin_gap": float(series["margin_gap"][-1]),
            "prediction": how,
            "prediction_count_fourier": int(significant_count(beta_star, "fourier")),
            "prediction_count_primal": int(significant_count(beta_star, "primal")),
        })
        fin["one_minus_cos_decade_ago"] = float(_at(steps, series["one_minus_cos"], T / 10))
        if d_pred is not None:
            fin["one_minus_cos_theory_predicted"] = d_pred
    if kkt_vals and math.isfinite(kkt_vals[-1]):
        fin.update({"kkt": kkt_vals[-1], "kkt_part": kkt_part[-1],
                    "kkt_decade_ago": float(_at(kkt_steps, kkt_vals, T / 10)),
                    "slope_kkt": _slope(kkt_steps, kkt_vals)})
    return {
        "arch": arch, "depth": depth, "dataset": dt.spec.name, "seed": int(run.seed),
        "init_scale": float(run.init_scale), "final": fin, "series": series,
        "kkt": {"step": kkt_steps, "residual": kkt_vals, "part": kkt_part},
        "beta": beta_T, "beta_star": beta_star,
    }


def _at(steps, values, t):
    """The value at the recorded step closest to t (in log)."""
    steps = np.asarray(steps, dtype=np.float64)
    ok = steps > 0
    if not ok.any():
        return math.nan
    i = int(np.argmin(np.abs(np.log(steps[ok]) - math.log(max(t, 1.0)))))
    return float(np.asarray(values)[ok][i])


# --------------------------------------------------------------------------- claims


def _fmt(x, digits=2):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "inf" if x == math.inf else "n/a"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.{digits - 1}e}".replace("e-0", "e-").replace("e+0", "e+")


def _claim(claim, arch, depth, measure, per_run, threshold, rule, runs, cfg, sentence_fn, extra=None):
    """One report entry. ``per_run``: list of (value, passed, status) over the runs."""
    values = [v for v, _, _ in per_run]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    worst = max(finite) if len(finite) == len(values) else math.inf
    npass = sum(bool(ok) for _, ok, _ in per_run)
    entry = {
        "claim": claim, "arch": arch, "depth": depth, "measure": measure,
        "value": worst, "threshold": threshold, "rule": rule,
        "passed": npass == len(per_run),
        "runs": len(per_run), "runs_passed": npass,
        "median": float(np.median(finite)) if finite else math.nan,
        "datasets": sorted({r["dataset"] for r in runs}),
        "steps": int(cfg.steps[(arch, depth)]),
        "status": sorted({s for _, _, s in per_run}),
    }
    entry.update(extra or {})
    entry["sentence"] = sentence_fn(entry)
    return entry


def _build_claims(results, cfg):
    """The report's claims, one entry per (claim, arch, depth) and aspect."""
    claims = []
    for arch, depth in SETUPS:
        runs = results.get((arch, depth), [])
        if not runs:
            continue
        pen, p, domain, claim = _expectation(arch, depth)
        T = cfg.steps[(arch, depth)]
        fins = [r["final"] for r in runs]
        if claim == "Theorem 1":
            thr = THRESHOLDS["svm_direction"]
            per = [(f["one_minus_cos"], f["one_minus_cos"] <= thr, "reached" if f["one_minus_cos"] <= thr else "not reached")
                   for f in fins]
            slope = max(f["slope_one_minus_cos"] for f in fins)
            need = max(_steps_to(f["one_minus_cos"], f["slope_one_minus_cos"], thr, T) for f in fins)
            gap = max(abs(f["margin_gap"]) for f in fins)

            def sentence(e, slope=slope, need=need, gap=gap, name=_arch_name(arch, depth)):
                s = (f"{e['claim']}, {name}: after {_fmt(e['steps'])} steps the largest 1 − cos(β_T, β*_ℓ2) "
                     f"over {e['runs']} runs is {_fmt(e['value'])} (median {_fmt(e['median'])}; threshold "
                     f"{_fmt(e['threshold'])}); the ℓ2-normalized margin is within {_fmt(gap)} of the SVM's; "
                     f"1 − cos falls as t^{_fmt(slope)} over the last decade")
                if e["passed"]:
                    return s + ". Confirmed."
                return s + (f", so reaching the threshold on every run would take about {_fmt(need)} steps: "
                            f"not confirmed within the budget.")

            claims.append(_claim(claim, arch, depth, "1 − cos(β_T, β*_ℓ2) (max over runs)", per, thr,
                                 "value <= threshold on every run", runs, cfg, sentence,
                                 {"slope": slope, "steps_to_threshold": need, "margin_gap": gap}))
            continue
        if depth == 2:
            target = "β*_F1 (eq. 9)" if arch == "conv" else "β*_ℓ1"
            thr = THRESHOLDS["closer_ratio"]
            ratios = [f["one_minus_cos"] / f["one_minus_cos_svm"] for f in fins]
            per = [(q, q <= thr, "closer" if q <= thr else "not clearly closer") for q in ratios]
            gap = max(abs(f["margin_gap"]) for f in fins)
            omc = [f["one_minus_cos"] for f in fins]

            def sentence(e, omc=omc, gap=gap, target=target, name=_arch_name(arch, depth)):
                s = (f"{e['claim']}, {name}: after {_fmt(e['steps'])} steps 1 − cos to {target} is "
                     f"{_fmt(min(omc))}–{_fmt(max(omc))} over {e['runs']} runs, and its ratio to 1 − cos to the SVM is at "
                     f"most {_fmt(e['value'])} (threshold {_fmt(e['threshold'])}; {e['runs_passed']}/{e['runs']} runs "
                     f"below); the normalized margin gap is at most {_fmt(gap)}")
                return s + (". Confirmed." if e["passed"] else ": not confirmed on every run.")

            claims.append(_claim(claim, arch, depth, f"(1 − cos to {target}) / (1 − cos to β*_ℓ2) (max over runs)",
                                 per, thr, "value <= threshold on every run", runs, cfg, sentence,
                                 {"margin_gap": gap, "one_minus_cos_max": max(omc), "one_minus_cos_median": float(np.median(omc))}))
            thr = THRESHOLDS["approach_slope"]
            slopes = [f["slope_one_minus_cos"] for f in fins]
            per = [(s, s <= thr, "approaching" if s <= thr else "stalled") for s in slopes]
            need = max(_steps_to(f["one_minus_cos"], f["slope_one_minus_cos"], 1e-4, T) for f in fins)

            def sentence(e, need=need, target=target, name=_arch_name(arch, depth)):
                s = (f"{e['claim']}, {name}: over the last decade 1 − cos to {target} falls at least as fast "
                     f"as t^{_fmt(e['threshold'])} on {e['runs_passed']}/{e['runs']} runs; the slowest goes as "
                     f"t^{_fmt(e['value'])}")
                if need > 1e12:
                    s += (", so 1 − cos ≤ 1e-4 on every run would take more than 1e12 steps: the slowest runs "
                          "are effectively stalled")
                elif need > e["steps"]:
                    s += f"; at these rates 1 − cos ≤ 1e-4 on every run would take about {_fmt(need)} steps"
                return s + ("." if e["passed"] else ": not confirmed on every run.")

            claims.append(_claim(claim + " (still approaching)", arch, depth,
                                 f"log-log slope of 1 − cos to {target} over the last decade (max over runs)",
                                 per, thr, "value < threshold on every run", runs, cfg, sentence,
                                 {"steps_to_1e-4": need}))
            continue
        thr = THRESHOLDS["kkt"]
        per = []
        for f in fins:
            if not f["separates"] or "kkt" not in f:
                per.append((math.inf, False, "does not separate"))
            elif f["kkt"] <= thr:
                per.append((f["kkt"], True, "certified"))
            elif f["slope_kkt"] <= THRESHOLDS["approach_slope"] and f["kkt"] < f["kkt_decade_ago"]:
                per.append((f["kkt"], True, "falling"))
            else:
                per.append((f["kkt"], False, "not falling"))
        sep = [f for f in fins if "kkt" in f]
        near = [f["one_minus_cos"] for f in fins if "one_minus_cos" in f]
        problem = "(10) in the Fourier domain" if arch == "conv" else "min ||β||_{2/L} (eq. 15 with Lemma 6)"
        need = max((_steps_to(f["kkt"], f["slope_kkt"], thr, T) for f in sep), default=math.inf)
        falling = [f["slope_kkt"] for f, (_, _, st) in zip(fins, per) if st == "falling"]

        def sentence(e, near=near, need=need, problem=problem, name=_arch_name(arch, depth)):
            counts = {s: sum(1 for _, _, st in e["_per"] if st == s) for s in e["status"]}
            s = (f"{e['claim']}, {name}: the KKT residual of {problem} at β_T, p = 2/{e['depth']}, is at most "
                 f"{_fmt(e['value'])} over {e['runs']} runs (median {_fmt(e['median'])}; "
                 + ", ".join(f"{n} {k}" for k, n in counts.items()) + f"; threshold {_fmt(e['threshold'])}, "
                 f"or falling at least as t^{_fmt(THRESHOLDS['approach_slope'])} over the last decade)")
            if near:
                s += (f"; the nearest stationary point the theory layer finds from β_T lies within "
                      f"1 − cos ≤ {_fmt(max(near))} of β_T (median {_fmt(float(np.median(near)))})")
            if not e["passed"]:
                s += ": not confirmed on every run"
            elif any(st == "falling" for _, _, st in e["_per"]):
                s += (f"; the slowest falling residual goes as t^{_fmt(e['slowest_falling_slope'])}, so at their "
                      "current rates the falling runs reach the threshold after "
                      + (f"about {_fmt(need)} steps" if need <= 1e12 else "more than 1e12 steps"))
            return s + "."

        entry = _claim(claim, arch, depth, f"KKT residual at β_T, p = 2/{depth} (max over runs)", per, thr,
                       "value <= threshold, or falling over the last decade, on every run", runs, cfg,
                       lambda e: "", {"_per": per, "steps_to_threshold": need,
                                      "slowest_falling_slope": max(falling) if falling else math.nan,
                                      "one_minus_cos_to_stationary_point": max(near) if near else math.nan})
        entry["sentence"] = sentence(entry)
        del entry["_per"]
        claims.append(entry)
    claims += _sparsity_claims(results, cfg)
    return claims


def _arch_name(arch, depth):
    return {"linear": "linear predictor", "fc": f"fc L={depth}", "diag": f"diag L={depth}",
            "conv": f"conv L={depth}"}[arch]


def _sparsity_claims(results, cfg):
    """Depth makes conv predictors sparser in frequency (Section 1, Theorem 2a), paired by
    (dataset, initialization): conv L = 2 against fc L = 2 (the SVM direction), conv L > 2
    against conv L = 2. The measure is the largest increase in the count of significant
    Fourier coefficients over the pairs; it must be <= 0."""
    out = []

    def counts(key):
        return {(r["dataset"], r["seed"]): r["final"]["count_fourier"] for r in results.get(key, [])}

    for depth in (2, 3, 4, 5):
        mine = counts(("conv", depth))
        ref_key = ("fc", 2) if depth == 2 else ("conv", 2)
        ref = counts(ref_key)
        pairs = sorted(k for k in mine if k in ref)
        if not pairs:
            continue
        diffs = [mine[k] - ref[k] for k in pairs]
        npass = sum(d <= 0 for d in diffs)
        ref_name = "fc L=2 (the SVM direction)" if depth == 2 else "conv L=2"
        runs = [r for r in results[("conv", depth)]]
        m_mine = float(np.median([mine[k] for k in pairs]))
        m_ref = float(np.median([ref[k] for k in pairs]))
        entry = {
            "claim": "Sparsity in frequency (Section 1)", "arch": "conv", "depth": depth,
            "measure": f"#Fourier coefficients for {MASS:.0%} of ‖β̂_T‖₁ minus that of "
                       f"{'fc L=2' if depth == 2 else 'conv L=2'} on the same dataset and seed (max over runs)",
            "value": float(max(diffs)), "threshold": 0.0, "rule": "value <= threshold (no run denser than its pair)",
            "passed": npass == len(pairs), "runs": len(pairs), "runs_passed": npass,
            "median": m_mine, "datasets": sorted({k[0] for k in pairs}),
            "steps": int(cfg.steps[("conv", depth)]),
            "status": sorted({"no denser" if d <= 0 else "denser" for d in diffs}),
            "counts": [mine[k] for k in pairs], "reference_counts": [ref[k] for k in pairs],
            "prediction_counts": [r["final"].get("prediction_count_fourier") for r in runs],
        }
        entry["sentence"] = (
            f"Sparsity, conv L={depth}: β_T needs a median {_fmt(m_mine)} of {cfg.datasets[0].d} Fourier "
            f"coefficients for {MASS:.0%} of ‖β̂_T‖₁ against {_fmt(m_ref)} for {ref_name}; "
            f"{npass}/{len(pairs)} runs are no denser than their pair"
            + (". Confirmed." if entry["passed"] else ": not confirmed on every run."))
        out.append(entry)
    return out


def _threshold_reasons(separation):
    return {
        "svm_direction": (
            "1e-4 in 1 − cos (about 0.8° of angle): at least "
            f"{_fmt(separation / 1e-4)}× below the smallest 1 − cos between the competing predictions "
            "(β*_ℓ2, β*_ℓ1, β*_F1) on these datasets, so a run within it has picked the SVM."),
        "closer_ratio": (
            "0.1: 'clearly closer' means an order of magnitude smaller 1 − cos to the predicted "
            "direction than to the SVM, the prediction of every other architecture."),
        "approach_slope": (
            "−0.1: 1 − cos to the prediction must still fall over the last decade of steps, by at least 21% "
            "(log-log slope ≤ −0.1). The measured slopes split into runs that converge (−0.25 to −2) and runs "
            "that are stalled (−0.05 to 0); −0.1 separates them. The same slope makes a KKT residual above "
            "its threshold count as falling."),
        "kkt": (
            "1e-3 (relative, dimensionless): the certificate's residual is the largest of its parts "
            "(stationarity, complementarity, dropped mass); the SVM, a dense predictor, scores "
            "O(1) against the same conditions (see 'baselines'); GD runs that converge reach 1e-5 to 1e-4 "
            "within 1e7 steps. Runs above it pass only if it fell over the last decade with slope ≤ −0.1 "
            "(slope and extrapolation reported)."),
        "sparsity": (
            "0: paired by dataset and initialization, conv L=2 may not need more Fourier coefficients "
            "than fc L=2 (whose β_T is the SVM direction), nor conv L>2 more than conv L=2. (With N > D "
            "the predictions themselves may use all D coefficients, so no strict decrease is required.)"),
    }


# --------------------------------------------------------------------------- the job


def _groups(specs):
    """Datasets grouped by shape, in order (fit_many stacks datasets of one shape)."""
    groups = {}
    for s in specs:
        groups.setdefault((s.n, s.d), []).append(s)
    return list(groups.values())


def run_paper(cfg, out, *, progress=True, log=None):
    """Run the configuration ``cfg`` and write the report and figures to ``out``.

    Parameters
    ----------
    cfg : Config (see ``config``)
    out : output folder (created)
    progress : show a tqdm progress bar (on stderr)
    log : callable(str) for notes (default: none)

    Returns
    -------
    dict, the report (also written to ``out/report.json``)
    """
    os.makedirs(out, exist_ok=True)
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    results, dts, notes = compute(cfg, progress=progress)
    say(f"GD and measures: {time.perf_counter() - t0:.1f} s")
    return write_outputs(cfg, results, dts, notes, out, log=log)


def compute(cfg, *, progress=True):
    """The GD runs and their measures: ``(results, dataset_theory, notes)``, the input of
    ``write_outputs``. ``results[(arch, depth)]`` is a list of per-run dicts."""
    import fastbias
    from fastbias import theory

    made = {}
    for spec in cfg.datasets:
        X, y = spec.make()
        if not theory.is_separable(X, y):
            raise RuntimeError(f"dataset {spec.name} is not separable")
        made[spec.name] = (X, y)
    work = sum(cfg.steps[s] * len(cfg.datasets) * len(cfg.init_seeds) for s in SETUPS if s in cfg.steps)
    side = cfg.side_checks
    work += (min(cfg.steps[("fc", 4)], 10**7) if side else 0)
    bar = _bar(work, progress)
    try:
        bar.set_postfix_str("convex predictions")
        dts = {s.name: _DatasetTheory(s, *made[s.name]) for s in cfg.datasets}
        results = {}
        for arch, depth in SETUPS:
            if (arch, depth) not in cfg.steps:
                continue
            T = cfg.steps[(arch, depth)]
            runs = []
            for group in _groups(cfg.datasets):
                D = group[0].d
                Xs = np.stack([made[s.name][0] for s in group])
                ys = np.stack([made[s.name][1] for s in group])
                basis = {f"e{d}": np.eye(D)[d] for d in range(D)}
                bar.set_postfix_str(f"GD {_arch_name(arch, depth)} on {len(group)}×{len(cfg.init_seeds)} "
                                    f"runs {group[0].n}x{D}" + (" (first call compiles)" if not results and not runs else ""))
                fitted = fastbias.fit_many(Xs, ys, arch=arch, depth=depth, seeds=cfg.init_seeds, steps=T,
                                           init_scale=cfg.init_scale[arch], references=basis)
                bar.update(T * len(fitted))
                bar.set_postfix_str(f"measures {_arch_name(arch, depth)}")
                for i, run in enumerate(fitted):
                    spec = group[i // len(cfg.init_seeds)]
                    runs.append(_analyze(run, dts[spec.name], arch, depth, cfg.kkt_per_decade))
            results[(arch, depth)] = runs
        notes = []
        if side:
            notes.append(_side_check(cfg, made, dts, bar, results))
        bar.set_postfix_str("report")
    finally:
        bar.close()
    return results, dts, notes


def write_outputs(cfg, results, dts, notes, out, *, log=None):
    """Write ``report.json``, ``report.md`` and the figures for ``compute``'s results; returns the report."""
    say = log or (lambda s: None)
    os.makedirs(out, exist_ok=True)
    report = _report(cfg, results, dts, notes)
    write_report(report, out)
    from fastbias import plot

    fig_ds = cfg.figure_dataset
    report_figs = {
        "beta": plot.beta_figure(*_figure_betas(results, fig_ds), os.path.join(out, "fig_beta.png"),
                                 title=f"β_T on dataset {fig_ds}, initialization seed {cfg.init_seeds[0]}"),
        "convergence": plot.convergence_figure(_figure_series(results), os.path.join(out, "fig_convergence.png")),
        "sparsity": plot.sparsity_figure(_figure_counts(results), os.path.join(out, "fig_sparsity.png"),
                                         d=cfg.datasets[0].d),
    }
    say("figures: " + ", ".join(os.path.basename(p) for p in report_figs.values()))
    return report


def _bar(total, progress):
    if progress:
        from tqdm import tqdm

        return tqdm(total=total, unit="step", unit_scale=True, desc="fastbias paper", dynamic_ncols=True,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}{postfix}]")

    class _Null:
        def update(self, n):
            pass

        def set_postfix_str(self, s):
            pass

        def close(self):
            pass

    return _Null()


def _side_check(cfg, made, dts, bar, results):
    """fc L = 4 at the engine's default initialization (1/sqrt(D)) on the first dataset and
    seed, against the main run (initial scale 0.01) at the same step."""
    import fastbias

    spec = cfg.datasets[0]
    seed = cfg.init_seeds[0]
    X, y = made[spec.name]
    T = min(cfg.steps[("fc", 4)], 10**7)
    bar.set_postfix_str("side check: fc L=4 at the default initialization")
    run = fastbias.fit(X, y, arch="fc", depth=4, steps=T, seed=seed, references={"svm": dts[spec.name].svm})
    bar.update(T)
    h = run.history
    omc = 1.0 - h["cos_svm"]
    slope = _slope(h["step"], omc)
    v = float(omc[-1])
    main = next(r for r in results[("fc", 4)] if r["dataset"] == spec.name and r["seed"] == seed)
    s_main = main["series"]
    ok = s_main["step"] <= T
    v_main = _at(s_main["step"], s_main["one_minus_cos"], T)
    slope_main = _slope(s_main["step"][ok], s_main["one_minus_cos"][ok])
    return {
        "what": "fc L=4 at the engine's default initialization 1/sqrt(D) against the claims' 0.01",
        "dataset": spec.name, "seed": seed, "steps": int(T), "one_minus_cos": v, "slope": slope,
        "one_minus_cos_at_0.01": v_main, "slope_at_0.01": slope_main,
        "sentence": (f"Initial scale, fc L=4 on {spec.name} (seed {seed}), {_fmt(T)} steps: 1 − cos to the SVM is "
                     f"{_fmt(v)} from the engine's default 1/√D against {_fmt(v_main)} from 0.01 (the claims' "
                     f"scale), falling as t^{_fmt(slope)} and t^{_fmt(slope_main)}. The rate t^(−2/L) is the "
                     "same; a larger initial scale adds a transient (the part of the initial weights that GD "
                     "does not move) that multiplies 1 − cos by the ratio above."),
    }


# --------------------------------------------------------------------------- report


def _report(cfg, results, dts, notes):
    from fastbias import theory
    import fastbias

    # separation of the competing convex predictions (justifies the Theorem 1 threshold)
    seps = []
    baselines = []
    for name, dt in dts.items():
        b = [dt.convex[("fc", 2)].beta, dt.convex[("diag", 2)].beta, dt.convex[("conv", 2)].beta]
        for i in range(3):
            for j in range(i + 1, 3):
                seps.append(float(_one_minus_cos(b[i][None], b[j])[0]))
        for L in (3, 4, 5):
            baselines.append({"dataset": name, "p": f"2/{L}", "domain": "fourier",
                              "svm_kkt_residual": float(theory.kkt_residual(dt.X, dt.y, dt.svm, 2.0 / L, "fourier").residual)})
    separation = min(seps)
    claims = _build_claims(results, cfg)
    runs = []
    for (arch, depth), rs in results.items():
        for r in rs:
            runs.append({
                "arch": arch, "depth": depth, "dataset": r["dataset"], "seed": r["seed"],
                "init_scale": r["init_scale"], "final": r["final"],
                "kkt": r["kkt"],
                "series": {k: _thin(r["series"]["step"], v) for k, v in r["series"].items()},
            })
    return _clean({
        "fastbias": fastbias.__version__,
        "paper": "Gunasekar, Lee, Soudry, Srebro, Implicit Bias of Gradient Descent on Linear Convolutional Networks (NeurIPS 2018)",
        "config": cfg.as_dict(),
        "datasets": [{**asdict(s), "separable": True} for s in cfg.datasets],
        "thresholds": dict(THRESHOLDS),
        "threshold_reasons": _threshold_reasons(separation),
        "separation": {"min_one_minus_cos_between_predictions": separation, "all": seps},
        "baselines": baselines,
        "claims": claims,
        "notes": notes,
        "runs": runs,
    })


def _thin(steps, values, per_decade=5):
    """A series at about ``per_decade`` points per decade (the report keeps these)."""
    idx = [0] + _eval_rows(steps, per_decade)
    idx = sorted(set(idx))
    return [v.item() if hasattr(v, "item") else v for v in np.asarray(values)[idx]]


def _clean(obj):
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_clean(v) for v in obj.tolist()]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def write_report(report, out):
    """``out/report.json`` and ``out/report.md``."""
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, allow_nan=False)
        f.write("\n")
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write(report_markdown(report))


def claims_table(report):
    """The claims as a Markdown table."""
    rows = ["| claim | arch | L | measure | value | threshold | passed | runs |",
            "|---|---|---|---|---|---|---|---|"]
    for c in report["claims"]:
        status = ", ".join(c.get("status", []))
        passed = "yes" if c["passed"] else "**no**"
        if c["passed"] and "falling" in status:
            passed = "yes (falling)"
        rows.append(f"| {c['claim']} | {c['arch']} | {c['depth']} | {c['measure']} | {_fmt(c['value'])} | "
                    f"{_fmt(c['threshold'])} | {passed} | {c['runs_passed']}/{c['runs']} |")
    return "\n".join(rows) + "\n"


def report_markdown(report):
    cfg = report["config"]
    lines = [f"# fastbias paper: report ({cfg['name']}, seed {cfg['seed']})", "",
             f"Reproduces the claims of {report['paper']}: Theorem 1 (fc → ℓ2 SVM), Theorem 2 (conv L=2 → "
             "min ‖β̂‖₁), Theorem 2a (conv L>2 → a stationary point of min ‖β̂‖_{2/L}) and Lemma 6 with "
             "eq. (15) (diag → min ‖β‖_{2/L}). GD with certified adaptive steps (`fastbias.fit_many`), "
             "exponential loss; every run is compared with `fastbias.theory.predicted` (with "
             "`start=β_T` for L > 2).", "",
             "## Claims", "", claims_table(report).rstrip(), ""]
    for c in report["claims"]:
        lines.append(f"* {c['sentence']}")
    lines += ["", "## Notes", ""]
    for n in report["notes"]:
        lines.append(f"* {n['sentence']}")
    lines.append("* Measures are evaluated on the exact β_t of the history rows (about 20 per decade; KKT "
                 f"certificates at {cfg['kkt_per_decade']} per decade): 1 − cos = ‖u − u*‖²/2 for unit vectors; "
                 "γ_p = min margin / ‖Tβ‖_p with the predicted penalty; margin gap = 1 − γ_p/γ_p(β*).")
    lines += ["", "## Thresholds", ""]
    for k, v in report["threshold_reasons"].items():
        lines.append(f"* `{k}`: {v}")
    sep = report["separation"]["min_one_minus_cos_between_predictions"]
    lines.append(f"* Smallest 1 − cos between two competing predictions over the datasets: {_fmt(sep)}.")
    if report["baselines"]:
        worst = min(b["svm_kkt_residual"] for b in report["baselines"])
        lines.append(f"* Baseline: the SVM's KKT residual for (10), p = 2/L, L = 3–5: at least {_fmt(worst)}.")
    lines += ["", "## Configuration", "",
              "| dataset | N | D | seed | teacher |", "|---|---|---|---|---|"]
    for d in report["datasets"]:
        t = d["teacher"] if d["teacher"] == "gaussian" else f"{d['k']} frequencies"
        lines.append(f"| {d['name']} | {d['n']} | {d['d']} | {d['seed']} | {t} |")
    lines += ["", "Initialization seeds: " + ", ".join(map(str, cfg["init_seeds"])) + ". Initial scale: "
              + ", ".join(f"{a} {s}" for a, s in cfg["init_scale"].items()) + ". Steps: "
              + ", ".join(f"{k} {_fmt(v)}" for k, v in cfg["steps"].items()) + ".", "",
              "## Figures", "", "![β in time and frequency](fig_beta.png)", "",
              "![convergence](fig_convergence.png)", "", "![sparsity](fig_sparsity.png)", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- figure data


def _figure_betas(results, dataset):
    """({(arch, depth): (beta_T, beta_star)}, {(arch, depth): note}) for the first seed's run on
    ``dataset``; the note is the run's KKT residual where one is computed (p <= 1)."""
    out, notes = {}, {}
    for (arch, depth), runs in results.items():
        for r in runs:
            if r["dataset"] == dataset:
                out[(arch, depth)] = (r["beta"], r["beta_star"])
                if "kkt" in r["final"]:
                    notes[(arch, depth)] = f"KKT {_fmt(r['final']['kkt'], 1)}"
                break
    return out, notes


def _figure_series(results):
    """{(arch, depth): {measure: (steps, median over runs)}}."""
    out = {}
    for key, runs in results.items():
        m = {}
        n = min(len(r["series"]["step"]) for r in runs)
        steps = runs[0]["series"]["step"][:n]
        for name in ("one_minus_cos", "margin_gap", "count_fourier", "count_primal"):
            if all(name in r["series"] for r in runs):
                vals = np.array([np.abs(r["series"][name][:n]) for r in runs], dtype=np.float64)
                m[name] = (steps, np.median(vals, axis=0))
        if runs and runs[0]["kkt"]["step"]:
            k = min(len(r["kkt"]["step"]) for r in runs)
            vals = np.array([r["kkt"]["residual"][:k] for r in runs], dtype=np.float64)
            with warnings.catch_warnings():  # all-NaN columns (no run separates yet) stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                m["kkt"] = (np.array(runs[0]["kkt"]["step"][:k]), np.nanmedian(vals, axis=0))
        out[key] = m
    return out


def _figure_counts(results):
    """{(arch, depth): (counts of beta_T, counts of beta*)} with the arch's natural domain."""
    out = {}
    for (arch, depth), runs in results.items():
        dom = "count_primal" if arch == "diag" else "count_fourier"
        pdom = "prediction_" + dom
        out[(arch, depth)] = ([r["final"][dom] for r in runs],
                              [r["final"].get(pdom) for r in runs if r["final"].get(pdom) is not None])
    return out
