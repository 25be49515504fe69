"""The paper job (``fastbias paper``) through its smoke configuration: the same code path
as ``--quick`` and the full run, with tiny datasets and a few hundred steps."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from fastbias import paper

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("fig_beta.png", "fig_convergence.png", "fig_sparsity.png")
CLAIM_KEYS = {"claim", "arch", "depth", "measure", "value", "threshold", "rule", "passed", "datasets", "steps",
              "runs", "runs_passed", "sentence"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    report = paper.run_paper(paper.config("smoke"), str(out), progress=False)
    return out, report


def test_report_schema(smoke):
    out, report = smoke
    with open(out / "report.json", encoding="utf-8") as f:
        data = json.load(f)
    assert data == json.loads(json.dumps(report))  # what run_paper returns is what it wrote
    claims = data["claims"]
    assert claims
    for c in claims:
        assert CLAIM_KEYS <= set(c), CLAIM_KEYS - set(c)
        assert c["arch"] in ("linear", "fc", "diag", "conv")
        assert isinstance(c["depth"], int) and c["depth"] >= 1
        assert isinstance(c["passed"], bool)
        assert isinstance(c["threshold"], (int, float)) and math.isfinite(c["threshold"])
        assert c["value"] is None or isinstance(c["value"], (int, float))
        assert isinstance(c["datasets"], list) and c["datasets"]
        assert isinstance(c["steps"], int) and c["steps"] > 0
        assert 0 <= c["runs_passed"] <= c["runs"]
        assert c["passed"] == (c["runs_passed"] == c["runs"])
        assert c["claim"].split(" (")[0] in ("Theorem 1", "Theorem 2", "Theorem 2a", "Lemma 6",
                                              "Sparsity in frequency")
    # every architecture and depth of the job has a claim about its limit
    covered = {(c["arch"], c["depth"]) for c in claims}
    assert covered >= set(paper.SETUPS)
    # the thresholds are stated with their reasons
    assert set(data["thresholds"]) <= set(data["threshold_reasons"])
    assert data["config"]["name"] == "smoke"
    assert len(data["runs"]) == len(paper.SETUPS) * len(data["datasets"]) * len(data["config"]["init_seeds"])
    for r in data["runs"]:
        s = r["series"]
        assert len(s["step"]) == len(s["one_minus_cos_svm"]) >= 2


def test_report_markdown(smoke):
    out, report = smoke
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "| claim | arch | L | measure | value | threshold | passed | runs |" in text
    for c in report["claims"]:
        assert c["sentence"] in text
    for name in FIGURES:
        assert f"]({name})" in text


def test_figures_written(smoke):
    out, _ = smoke
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG), name
        assert 5_000 < len(data) < 1_000_000, (name, len(data))


def test_deterministic_through_the_cli(smoke, tmp_path, capsys):
    """Same seed, same numbers: the CLI's run reproduces the fixture's report.json byte for byte."""
    from fastbias import cli

    out, report = smoke
    assert cli.main(["paper", "--smoke", "--out", str(tmp_path), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "| claim | arch |" in printed.out and "claims passed" in printed.out
    assert printed.err == ""  # --quiet: no progress bar, no notes
    assert (tmp_path / "report.json").read_bytes() == (out / "report.json").read_bytes()


def test_seed_changes_the_data():
    a, b = paper.config("quick", seed=0), paper.config("quick", seed=1)
    Xa, _ = a.datasets[0].make()
    Xb, _ = b.datasets[0].make()
    assert not np.array_equal(Xa, Xb)
    assert paper.config("full").steps[("fc", 4)] > paper.config("quick").steps[("fc", 4)]
    with pytest.raises(ValueError, match="kind"):
        paper.config("huge")


@pytest.mark.parametrize("d", [8, 15, 16])
def test_significant_count(d):
    p = np.arange(d)
    cosine = np.cos(2 * np.pi * 3 * p / d + 0.4)        # one conjugate pair: 2 Fourier coefficients
    assert paper.significant_count(cosine, "fourier") == 2
    spike = np.zeros(d)
    spike[1] = -2.0                                     # one coordinate, flat spectrum
    assert paper.significant_count(spike, "primal") == 1
    assert paper.significant_count(spike, "fourier") == math.ceil(0.99 * d)
    stack = np.stack([cosine, spike])
    assert paper.significant_count(stack, "primal").tolist() == [paper.significant_count(cosine, "primal"), 1]


def test_fourier_teacher_is_sparse_in_frequency():
    t = paper.fourier_teacher(16, 2, seed=3)
    z = np.abs(np.fft.fft(t))
    assert np.sum(z > 1e-9 * z.max()) == 4  # two conjugate pairs
    X, y = paper.DatasetSpec("f", 12, 16, 3, "fourier", 2).make()
    assert np.array_equal(y, np.where(X @ t >= 0, 1.0, -1.0))


def test_imports_stay_light():
    """Importing the CLI and the study modules pulls in neither cvxpy, matplotlib nor tqdm."""
    code = ("import sys, fastbias.cli, fastbias.paper, fastbias.plot; "
            "print(sorted(m for m in ('cvxpy', 'matplotlib', 'tqdm', 'numba') if m in sys.modules))")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
