"""Figures of the paper job (PNG through matplotlib's Agg canvas; no pyplot state).

Each function takes plain arrays (what ``fastbias.paper`` computed) and a path, draws one
figure, writes it and returns the path. matplotlib is imported here only, when a figure
is drawn.
"""

import math

import numpy as np

ARCH_COLORS = {"linear": "#444444", "fc": "#1f77b4", "diag": "#2ca02c", "conv": "#d62728"}
DEPTH_STYLES = {1: "-", 2: "-", 3: "--", 4: "-.", 5: ":"}
DPI = 90


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def _label(arch, depth):
    return "linear" if arch == "linear" else f"{arch} L={depth}"


def _spectrum(beta):
    """Moduli of the unitary DFT on the half spectrum k = 0 .. D // 2."""
    beta = np.asarray(beta, dtype=np.float64)
    return np.abs(np.fft.rfft(beta)) / math.sqrt(len(beta))


def beta_figure(betas, notes, path, *, title="", archs=("fc", "diag", "conv"), depths=(2, 3, 4)):
    """β_T in the time domain and |β̂_T| in the frequency domain, one column per depth,
    two rows per architecture; the prediction β* as open circles (both scaled to unit norm).

    ``betas``: {(arch, depth): (beta_T, beta_star or None)}; ``notes``: {(arch, depth): str}
    appended to the panels' titles (e.g. the run's KKT residual).
    """
    from fastbias.paper import significant_count

    fig = _figure(2.7 * len(depths), 1.45 * 2 * len(archs))
    axes = fig.subplots(2 * len(archs), len(depths), squeeze=False)
    for i, arch in enumerate(archs):
        for j, depth in enumerate(depths):
            ax_t, ax_f = axes[2 * i, j], axes[2 * i + 1, j]
            if (arch, depth) not in betas:
                ax_t.set_axis_off()
                ax_f.set_axis_off()
                continue
            beta, star = betas[(arch, depth)]
            beta = np.asarray(beta, dtype=np.float64)
            color = ARCH_COLORS[arch]
            b = beta / np.linalg.norm(beta)
            f = _spectrum(b)
            d = np.arange(len(b))
            k = np.arange(len(f))
            ax_t.vlines(d, 0, b, color=color, lw=1.6)
            ax_t.axhline(0, color="0.6", lw=0.6)
            ax_f.vlines(k, 0, f, color=color, lw=2.2)
            if star is not None:
                s = np.asarray(star, dtype=np.float64)
                s = s / np.linalg.norm(s)
                ax_t.plot(d, s, "o", mfc="none", mec="k", ms=3.5, mew=0.7)
                ax_f.plot(k, _spectrum(s), "o", mfc="none", mec="k", ms=3.5, mew=0.7)
            nt = int(significant_count(beta, "primal"))
            nf = int(significant_count(beta, "fourier"))
            note = f", {notes[(arch, depth)]}" if (arch, depth) in notes else ""
            ax_t.set_title(f"{_label(arch, depth)}: time ({nt}/{len(b)}){note}", fontsize=8)
            ax_f.set_title(f"{_label(arch, depth)}: |β̂| ({nf}/{len(b)})", fontsize=8)
            ax_f.set_ylim(bottom=0)
            for ax in (ax_t, ax_f):
                ax.tick_params(labelsize=6)
            if i == len(archs) - 1:
                ax_f.set_xlabel("frequency k", fontsize=7)
            if j == 0:
                ax_t.set_ylabel("β[d]", fontsize=7)
                ax_f.set_ylabel("|β̂[k]|", fontsize=7)
    fig.suptitle((title + "\n" if title else "") + "bars: GD β_T (unit norm); circles: prediction β*; "
                 "(n/D): coefficients carrying 99% of the ℓ1 mass", fontsize=8)
    return _save(fig, path)


def convergence_figure(series, path):
    """The measures against the step t on log-log axes, one curve (median over runs) per
    architecture and depth: 1 − cos to the prediction, |normalized margin gap|, the KKT
    residual (p ≤ 1) and the significant-coefficient count.

    ``series``: {(arch, depth): {measure: (steps, values)}}.
    """
    panels = (("one_minus_cos", "1 − cos(β_t, β*)", True),
              ("margin_gap", "|1 − γ_p(β_t) / γ_p(β*)|", True),
              ("kkt", "KKT residual, p = 2/L ≤ 1", True),
              ("count", "coefficients for 99% of ‖·‖₁", False))
    fig = _figure(10.5, 7.2)
    axes = fig.subplots(2, 2).ravel()
    for ax, (name, label, logy) in zip(axes, panels):
        for (arch, depth), m in sorted(series.items(), key=lambda kv: (list(ARCH_COLORS).index(kv[0][0]), kv[0][1])):
            key = name
            if name == "count":
                key = "count_primal" if arch == "diag" else "count_fourier"
            if key not in m:
                continue
            t, v = (np.asarray(a, dtype=np.float64) for a in m[key])
            ok = (t > 0) & np.isfinite(v) & ((v > 0) if logy else True)
            if ok.sum() < 2:
                continue
            ax.plot(t[ok], v[ok], DEPTH_STYLES.get(depth, "-"), color=ARCH_COLORS[arch], lw=1.3,
                    label=_label(arch, depth))
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("step t", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
    axes[3].set_title("coefficients for 99% of ‖·‖₁ (Fourier; diag: coordinates)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.suptitle("Convergence to the predicted limits (median over runs)", fontsize=10)
    return _save(fig, path)


def sparsity_figure(counts, path, *, d):
    """Significant-coefficient counts of β_T against depth (median, range over runs; Fourier
    for fc and conv, coordinates for diag), with the predictions' counts as open markers.

    ``counts``: {(arch, depth): (counts of the runs, counts of their predictions)}.
    """
    fig = _figure(5.6, 3.8)
    ax = fig.subplots()
    offsets = {"fc": -0.12, "diag": 0.0, "conv": 0.12, "linear": -0.12}
    for arch in ("fc", "diag", "conv"):
        keys = sorted(k for k in counts if k[0] == arch or (arch == "fc" and k[0] == "linear"))
        if not keys:
            continue
        x, med, lo, hi, px, pm = [], [], [], [], [], []
        for a, depth in keys:
            c, p = counts[(a, depth)]
            if not c:
                continue
            x.append(depth + offsets[arch])
            med.append(np.median(c))
            lo.append(np.median(c) - min(c))
            hi.append(max(c) - np.median(c))
            if p:
                px.append(depth + offsets[arch])
                pm.append(np.median(p))
        dom = "coordinates" if arch == "diag" else "Fourier"
        ax.errorbar(x, med, yerr=[lo, hi], fmt="o-", color=ARCH_COLORS[arch], ms=5, capsize=3, lw=1.2,
                    label=f"{arch if arch != 'fc' else 'linear / fc'} ({dom})")
        if pm:
            ax.plot(px, pm, "s", mfc="none", mec=ARCH_COLORS[arch], ms=8, mew=1.0)
    ax.plot([], [], "s", mfc="none", mec="0.3", ms=8, label="prediction β* (median)")
    ax.set_xlabel("depth L", fontsize=9)
    ax.set_ylabel(f"coefficients for 99% of ‖·‖₁ (of {d})", fontsize=9)
    ax.set_xticks(sorted({k[1] for k in counts}))
    ax.set_ylim(0, d + 1)
    ax.grid(True, lw=0.4, alpha=0.5)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Sparsity of β_T against depth (median and range over runs)", fontsize=9)
    return _save(fig, path)


# --------------------------------------------------------------------------- sweeps


def _save_atomic(fig, path):
    """``_save`` through ``fastbias.store.atomic_write``: the PNG appears whole or not at all."""
    import io

    from fastbias import store

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return store.atomic_write(path, buf.getvalue())


def _by_arch_depth(keys):
    return sorted(keys, key=lambda k: (list(ARCH_COLORS).index(k[0]) if k[0] in ARCH_COLORS else 99, k[1]))


def sweep_convergence_figure(series, path, *, title=""):
    """Measures of a sweep against the step t (log x), one curve per architecture and
    depth: the median over its runs, with the range (min to max) shaded.

    ``series``: {(arch, depth): {measure: (steps, median, low, high)}} for the measures
    ``one_minus_cos_predicted``, ``one_minus_cos_l2``, ``normalized_margin``, ``log_loss``.
    """
    panels = (("one_minus_cos_predicted", "1 − cos(β_t, β*), β* = theory.predicted", True),
              ("one_minus_cos_l2", "1 − cos(β_t, β_ℓ2) (the SVM)", True),
              ("normalized_margin", "min_n y_n⟨x_n, β_t⟩ / ‖β_t‖₂", False),
              ("log_loss", "log L(w_t)", False))
    fig = _figure(10.5, 7.2)
    axes = fig.subplots(2, 2).ravel()
    for ax, (name, label, logy) in zip(axes, panels):
        for arch, depth in _by_arch_depth(series):
            m = series[(arch, depth)]
            if name not in m:
                continue
            t, med, lo, hi = (np.asarray(a, dtype=np.float64) for a in m[name])
            ok = (t > 0) & np.isfinite(med) & ((med > 0) if logy else True)
            if ok.sum() < 2:
                continue
            color = ARCH_COLORS.get(arch, "0.3")
            ax.plot(t[ok], med[ok], DEPTH_STYLES.get(depth, "-"), color=color, lw=1.3, label=_label(arch, depth))
            band = ok & np.isfinite(lo) & np.isfinite(hi) & ((lo > 0) if logy else True)
            if band.sum() >= 2:
                ax.fill_between(t[band], lo[band], hi[band], color=color, alpha=0.12, lw=0)
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("step t", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[3].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=7)
    fig.suptitle((title + ": " if title else "") + "convergence (median over runs, range shaded)", fontsize=10)
    return _save_atomic(fig, path)


def sweep_final_figure(finals, path, *, title=""):
    """Final measures of a sweep against depth, one line per architecture: the median over
    its runs with the range (min to max) as error bars.

    ``finals``: {measure: {(arch, depth): values}} for ``one_minus_cos_predicted``,
    ``kkt_residual``, ``margin_ratio`` (γ_p(β_T) / γ_p(β*)) and ``log_loss``.
    """
    panels = (("one_minus_cos_predicted", "1 − cos(β_T, β*)", True),
              ("kkt_residual", "KKT residual of β_T (theory.kkt_residual)", True),
              ("margin_ratio", "γ_p(β_T) / γ_p(β*),  γ_p = min margin / ‖Tβ‖_p", False),
              ("log_loss", "log L(w_T)", False))
    fig = _figure(10.5, 7.2)
    axes = fig.subplots(2, 2).ravel()
    archs = [a for a in ARCH_COLORS if any(k[0] == a for m in finals.values() for k in m)]
    offsets = {a: 0.08 * (i - (len(archs) - 1) / 2) for i, a in enumerate(archs)}
    depths = set()
    for ax, (name, label, logy) in zip(axes, panels):
        m = finals.get(name, {})
        for arch in archs:
            x, med, lo, hi = [], [], [], []
            for a, depth in _by_arch_depth(k for k in m if k[0] == arch):
                v = np.asarray(m[(a, depth)], dtype=np.float64)
                v = v[np.isfinite(v) & ((v > 0) if logy else True)]
                if not len(v):
                    continue
                depths.add(depth)
                x.append(depth + offsets[arch])
                med.append(np.median(v))
                lo.append(np.median(v) - v.min())
                hi.append(v.max() - np.median(v))
            if x:
                ax.errorbar(x, med, yerr=[lo, hi], fmt="o-", color=ARCH_COLORS[arch], ms=4, capsize=3, lw=1.2,
                            label=arch)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("depth L", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
    for ax in axes:
        if depths:
            ax.set_xticks(sorted(depths))
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle((title + ": " if title else "") + "final measures against depth (median, range)", fontsize=10)
    return _save_atomic(fig, path)
