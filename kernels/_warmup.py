"""Compile (or load from Numba's cache) the common kernel signatures up front."""

import numpy as np


def warmup(dtypes=("float64", "float32")):
    """Compile every public kernel for the given dtypes, so no timed call pays for it.

    With Numba's on-disk cache this loads the machine code (milliseconds per
    kernel); on an empty cache it compiles (tens of seconds in all).
    """
    from . import api

    for dt in dtypes:
        dt = np.dtype(dt)
        ws = np.full((2, 3, 8), 0.5, dt)
        g = np.ones(8, dt)
        for backend in ("direct", "rfft", "fftw"):  # fftw: the jitted glue around the plans
            api.xcorr(ws[0, 0], ws[0, 1], backend=backend)
            api.pconv(ws, backend=backend)
            api.pconv_jvp(ws, ws, backend=backend)
            api.pconv_vjp(ws, g, backend=backend)
        api.pdiag(ws)
        api.pdiag_jvp(ws, ws)
        api.pdiag_vjp(ws, g)
        Ws = [np.ones((8, 4), dt), np.ones((4, 1), dt)]
        api.pfull(Ws)
        api.pfull_jvp(Ws, Ws)
        api.pfull_vjp(Ws, g)
