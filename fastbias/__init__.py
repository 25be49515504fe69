"""fastbias: gradient descent on linear networks, fast and verified.

Built on Gunasekar, Lee, Soudry, Srebro, *Implicit Bias of Gradient Descent on
Linear Convolutional Networks* (NeurIPS 2018). The kernels live in
``fastbias.kernels``; importing ``fastbias`` itself stays light (Numba, cvxpy and
plotting are imported by the parts that need them).
"""

import importlib

__version__ = "0.1.0"

__all__ = ["fit", "fit_many", "kernels", "warmup", "__version__"]

_LAZY = {"fit": "fastbias.engine", "fit_many": "fastbias.engine", "Run": "fastbias.engine"}


def warmup(dtypes=("float64", "float32")):
    """Compile (or load from Numba's cache) the common kernel signatures, so that
    no user-timed first call pays for compilation. See ``fastbias.kernels.warmup``."""
    from .kernels import warmup as _warmup

    _warmup(dtypes)


def __getattr__(name):
    if name == "kernels":
        return importlib.import_module(".kernels", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastbias' has no attribute {name!r}")
