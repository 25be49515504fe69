"""The installed package: layout, public names, the console command, import weight."""

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import fastbias
from fastbias import kernels as K

REPO = Path(__file__).resolve().parents[1]


def _run(code_or_args, cwd, **kw):
    args = [sys.executable, "-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the installed package only, never a checkout on the path
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kw)


def test_no_top_level_kernels_package(tmp_path):
    """``kernels/`` is installed as ``fastbias.kernels`` only: no stray top-level ``kernels``."""
    # in this process: run pytest with --import-mode=importlib (pyproject), never with the
    # repository root on sys.path (``python -m pytest`` from the root puts it there)
    assert importlib.util.find_spec("kernels") is None, (
        f"a top-level 'kernels' is importable from {importlib.util.find_spec('kernels').origin}; "
        "is the repository root on sys.path?"
    )
    assert "kernels" not in sys.modules
    # in a fresh interpreter started outside the checkout
    proc = _run(
        "import importlib.util, fastbias.kernels as K; "
        "print(importlib.util.find_spec('kernels') is None); print(K.__name__)",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "fastbias.kernels"]
    proc = _run("import kernels", cwd=tmp_path)
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr


def test_public_names():
    assert len(K.__all__) == len(set(K.__all__))
    for name in K.__all__:
        assert hasattr(K, name), name
        assert getattr(fastbias.kernels, name) is getattr(K, name)
    for name in ("xcorr", "pconv", "pconv_jvp", "pconv_vjp", "pdiag", "pdiag_jvp", "pdiag_vjp",
                 "pfull", "pfull_jvp", "pfull_vjp", "warmup", "clear_plans", "choose_backend"):
        assert name in K.__all__ and callable(getattr(K, name)), name
    assert K.BACKENDS == ("direct", "rfft", "fftw")
    assert 1 <= K.AUTO_DIRECT_MAX_D < K.AUTO_RFFT_MAX_D
    assert fastbias.kernels is K
    assert set(fastbias.__all__) >= {"kernels", "warmup", "__version__"}
    assert isinstance(fastbias.__version__, str)
    with pytest.raises(AttributeError, match="no_such_name"):
        fastbias.no_such_name


def test_kernels_location():
    """``fastbias.kernels`` comes from the repository's ``kernels/`` (editable install)
    or from site-packages (a regular install), nowhere else."""
    here = Path(K.__file__).resolve()
    assert here.name == "__init__.py"
    site = {Path(p).resolve() for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
    in_repo = here.parent == (REPO / "kernels").resolve()
    in_site = any(here.parent == s / "fastbias" / "kernels" for s in site)
    assert in_repo or in_site, here
    assert Path(fastbias.__file__).resolve().parent.name == "fastbias"


def test_kernels_import_nothing_above_them(tmp_path):
    """Arrows point down: the kernels never import the fastbias rooms above them."""
    proc = _run(
        "import sys; import fastbias.kernels; "
        "mods = sorted(m for m in sys.modules if m.startswith('fastbias.') and not m.startswith('fastbias.kernels')); "
        "print(mods); print('cvxpy' in sys.modules)",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["[]", "False"]


def test_import_fastbias_is_light(tmp_path):
    """``import fastbias`` imports neither cvxpy nor Numba nor plotting (its docstring's
    promise); they come with the parts that need them."""
    proc = _run(
        "import sys, fastbias; "
        "print('cvxpy' in sys.modules); "
        "print(sorted(m for m in ('numba', 'matplotlib', 'dask', 'fastbias.kernels') if m in sys.modules))",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    cvxpy_loaded, others = proc.stdout.strip().split("\n")
    assert cvxpy_loaded == "False", "import fastbias imported cvxpy"
    assert others == "[]", f"import fastbias imported {others}"


def _fastbias_command():
    exe = shutil.which("fastbias", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    assert exe is not None, "the fastbias console script is not installed next to this interpreter"
    return exe


def test_demo_console_command(tmp_path):
    proc = _run([_fastbias_command(), "demo"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "adjoint identity" in proc.stdout
    # the printed identity holds: <JVP, g> and <dw, VJP> agree to ~1e-12
    line = next(l for l in proc.stdout.splitlines() if l.startswith("adjoint identity"))
    values = [float(part.split("=")[1].split()[0]) for part in line.split(":", 1)[1].split("   ")]
    assert len(values) == 2
    assert abs(values[0] - values[1]) <= 1e-10 * max(1.0, abs(values[0]))


def test_demo_options_and_module_entry(tmp_path):
    proc = _run([_fastbias_command(), "demo", "--dim", "5", "--depth", "1", "--seed", "3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "depth L=1, dimension D=5, seed 3" in proc.stdout
    proc = _run([sys.executable, "-m", "fastbias", "demo", "--dim", "3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "adjoint identity" in proc.stdout
    proc = _run([_fastbias_command(), "demo", "--dim", "0"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "--dim" in proc.stderr


def test_demo_agrees_with_kernels(capsys):
    """The demo's printed beta is pconv of its seeded weights (in-process, via main())."""
    from fastbias import cli

    with np.printoptions():  # the demo sets print options; keep them local to this test
        assert cli.main(["demo", "--dim", "6", "--depth", "2", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    rng = np.random.default_rng(5)
    ws = rng.standard_normal((2, 6))
    beta = K.pconv(ws)
    with np.printoptions(precision=4, suppress=True, linewidth=100):
        assert f"beta = P_conv(w) = {beta}" in out
