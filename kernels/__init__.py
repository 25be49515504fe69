"""fastbias.kernels: Numba kernels for the predictor maps of linear networks.

Public, validated functions (arrays in, arrays out):

``xcorr``                                   eq. (2)
``pconv``, ``pconv_jvp``, ``pconv_vjp``     conv nets, eqs. (2)-(3), ``backend=``
``pdiag``, ``pdiag_jvp``, ``pdiag_vjp``     diagonal nets (Section 5)
``pfull``, ``pfull_jvp``, ``pfull_vjp``     fully connected nets, eq. (1)

The jitted variants behind them (``*_direct``, ``*_rfft``, ``*_fftw``,
``prod_layers*``, ``pfull_*_flat``) take unchecked, C-contiguous, batched arrays
and are for other compiled code; see their modules.
"""

from .api import (
    AUTO_DIRECT_MAX_D,
    AUTO_RFFT_MAX_D,
    BACKENDS,
    choose_backend,
    pconv,
    pconv_jvp,
    pconv_vjp,
    pdiag,
    pdiag_jvp,
    pdiag_vjp,
    pfull,
    pfull_jvp,
    pfull_vjp,
    xcorr,
)
from ._fftw import clear_plans
from ._warmup import warmup

__all__ = [
    "AUTO_DIRECT_MAX_D",
    "AUTO_RFFT_MAX_D",
    "BACKENDS",
    "choose_backend",
    "clear_plans",
    "pconv",
    "pconv_jvp",
    "pconv_vjp",
    "pdiag",
    "pdiag_jvp",
    "pdiag_vjp",
    "pfull",
    "pfull_jvp",
    "pfull_vjp",
    "warmup",
    "xcorr",
]
