"""asv suites for ``fastbias.kernels``: every conv variant, the diagonal and fully
connected maps, and a plain NumPy evaluation of each, with the same parameters.

* ``PConv``/``PConvJVP``/``PConvVJP``: the raw jitted variants (``direct``, ``rfft``,
  ``fftw``) on the batched ``(1, L, D)`` arrays they take, the public validated
  wrapper with ``backend="auto"`` (``public``), and ``numpy`` (the plain
  ``numpy.fft`` evaluation below, on the unbatched ``(L, D)`` arrays).
* ``PDiag``/``PFull``: the raw kernel (``numba``), the public validated wrapper
  (``public``) and ``numpy``.
* ``CallOverhead``: the public wrapper ``pconv(ws, backend="direct")`` against the
  raw kernel it calls, at D=16, L=2, where the Python-level cost dominates.
* ``ColdStart``: ``timeraw_*`` in a fresh interpreter: import + first call with
  Numba's on-disk cache warm, and with an empty cache (compilation).

``setup()`` makes the inputs and does one warm-up call, so that compilation and
FFTW planning stay out of ``time_*``. asv 0.6.6 re-runs ``setup()`` before every
sample (and then times one call per sample), so the inputs are memoized and the
warm-up is a single call. Absolute times drift on shared machines: compare
variants within one run, or use ``benchmarks/kernel_ratios.py``, which interleaves
the variants in one process and prints the ratios.
"""

import functools
import time

import numpy as np

import fastbias.kernels as K
from fastbias.kernels import _direct, _fftw, _rfft
from fastbias.kernels._full import pfull_flat, pfull_jvp_flat, pfull_vjp_flat
from fastbias.kernels._products import prod_layers, prod_layers_jvp, prod_layers_vjp

SIZES = (16, 64, 256, 1024, 4096)
FULL_SIZES = (16, 64, 256, 1024)
DEPTHS = (2, 4)
CONV_BACKENDS = ("direct", "rfft", "fftw")
SLOW_CALL_S = 0.2
"""A variant slower than this per call is skipped (NotImplementedError in setup)."""

# --------------------------------------------------------------------------- NumPy
# Plain NumPy evaluations of the same maps, on one network: ``ws``/``dws`` of
# shape (L, D), ``g`` of shape (D,). The reference a user would write without
# fastbias (the correctness references are in tests/naive.py).


def _all_but_one(A):
    """``out[l] = prod_{j != l} A[j]`` along axis 0, from prefix and suffix products."""
    ones = np.ones_like(A[:1])
    prefix = np.cumprod(np.concatenate([ones, A[:-1]]), axis=0)
    suffix = np.cumprod(np.concatenate([ones, A[:0:-1]]), axis=0)[::-1]
    return prefix * suffix


def pconv_numpy(ws):
    """``beta = w_1 (*) ... (*) w_L`` by ``irfft(prod_l rfft(w_l))``."""
    D = ws.shape[-1]
    return np.fft.irfft(np.prod(np.fft.rfft(ws, axis=-1), axis=0), D)


def pconv_jvp_numpy(ws, dws):
    D = ws.shape[-1]
    W = np.fft.rfft(ws, axis=-1)
    dW = np.fft.rfft(dws, axis=-1)
    return np.fft.irfft(np.sum(dW * _all_but_one(W), axis=0), D)


def pconv_vjp_numpy(ws, g):
    D = ws.shape[-1]
    W = np.fft.rfft(ws, axis=-1)
    G = np.fft.rfft(g)
    return np.fft.irfft(G * np.conj(_all_but_one(W)), D, axis=-1)


def pdiag_numpy(ws):
    return np.prod(ws, axis=0)


def pdiag_jvp_numpy(ws, dws):
    return np.sum(dws * _all_but_one(ws), axis=0)


def pdiag_vjp_numpy(ws, g):
    return g * _all_but_one(ws)


def pfull_numpy(Ws):
    """``beta = W_1 W_2 ... W_L`` as a chain of matrix-vector products, right to left."""
    r = Ws[-1][:, 0]
    for W in Ws[-2::-1]:
        r = W @ r
    return r


def pfull_jvp_numpy(Ws, dWs):
    r = Ws[-1][:, 0]
    dr = dWs[-1][:, 0]
    for W, dW in zip(Ws[-2::-1], dWs[-2::-1]):
        dr = dW @ r + W @ dr
        r = W @ r
    return dr


def pfull_vjp_numpy(Ws, g):
    L = len(Ws)
    rs = [None] * (L + 1)
    rs[L] = np.ones(1, Ws[-1].dtype)
    for l in range(L - 1, 0, -1):
        rs[l] = Ws[l] @ rs[l + 1]
    out = []
    a = g
    for l in range(L):
        out.append(np.outer(a, rs[l + 1]))
        if l < L - 1:
            a = Ws[l].T @ a
    return out


# --------------------------------------------------------------------------- cases
# One place that says what each variant calls, shared with kernel_ratios.py.
# Each ``*_calls`` returns {variant: zero-argument callable}.

CONV_OPS = ("pconv", "pconv_jvp", "pconv_vjp")
DIAG_OPS = ("pdiag", "pdiag_jvp", "pdiag_vjp")
FULL_OPS = ("pfull", "pfull_jvp", "pfull_vjp")

_CONV_RAW = {
    "pconv": {"direct": _direct.pconv_direct, "rfft": _rfft.pconv_rfft, "fftw": _fftw.pconv_fftw},
    "pconv_jvp": {"direct": _direct.pconv_jvp_direct, "rfft": _rfft.pconv_jvp_rfft, "fftw": _fftw.pconv_jvp_fftw},
    "pconv_vjp": {"direct": _direct.pconv_vjp_direct, "rfft": _rfft.pconv_vjp_rfft, "fftw": _fftw.pconv_vjp_fftw},
}
_CONV_NUMPY = {"pconv": pconv_numpy, "pconv_jvp": pconv_jvp_numpy, "pconv_vjp": pconv_vjp_numpy}
_CONV_PUBLIC = {"pconv": K.pconv, "pconv_jvp": K.pconv_jvp, "pconv_vjp": K.pconv_vjp}
_DIAG_RAW = {"pdiag": prod_layers, "pdiag_jvp": prod_layers_jvp, "pdiag_vjp": prod_layers_vjp}
_DIAG_NUMPY = {"pdiag": pdiag_numpy, "pdiag_jvp": pdiag_jvp_numpy, "pdiag_vjp": pdiag_vjp_numpy}
_DIAG_PUBLIC = {"pdiag": K.pdiag, "pdiag_jvp": K.pdiag_jvp, "pdiag_vjp": K.pdiag_vjp}
_FULL_RAW = {"pfull": pfull_flat, "pfull_jvp": pfull_jvp_flat, "pfull_vjp": pfull_vjp_flat}
_FULL_NUMPY = {"pfull": pfull_numpy, "pfull_jvp": pfull_jvp_numpy, "pfull_vjp": pfull_vjp_numpy}
_FULL_PUBLIC = {"pfull": K.pfull, "pfull_jvp": K.pfull_jvp, "pfull_vjp": K.pfull_vjp}


@functools.lru_cache(maxsize=None)
def layer_inputs(D, L, dtype="float64", seed=0):
    """``(ws, dws, g)`` of shapes (L, D), (L, D), (D,). Shared between calls: do not
    write to them (not flagged read-only, which would make Numba compile other
    specializations than the ones users get)."""
    rng = np.random.default_rng(seed)
    ws = rng.standard_normal((L, D)).astype(dtype)
    dws = rng.standard_normal((L, D)).astype(dtype)
    g = rng.standard_normal(D).astype(dtype)
    return ws, dws, g


@functools.lru_cache(maxsize=None)
def full_inputs(D, L, dtype="float64", seed=0):
    """``(Ws, dWs, g)``: widths D -> D -> ... -> D -> 1 (L layers); do not write to them."""
    rng = np.random.default_rng(seed)
    shapes = [(D, D)] * (L - 1) + [(D, 1)]
    Ws = [(rng.standard_normal(s) / np.sqrt(s[0])).astype(dtype) for s in shapes]
    dWs = [(rng.standard_normal(s) / np.sqrt(s[0])).astype(dtype) for s in shapes]
    g = rng.standard_normal(D).astype(dtype)
    return Ws, dWs, g


def _extra_args(op, dws, g):
    """What an op takes after the layers: ``dws`` (JVP), ``g`` (VJP) or nothing."""
    if op.endswith("_jvp"):
        return (dws,)
    if op.endswith("_vjp"):
        return (g,)
    return ()


def conv_calls(op, D, L, dtype="float64"):
    """{"numpy", "direct", "rfft", "fftw", "public"}: the public one is ``backend="auto"``."""
    ws, dws, g = layer_inputs(D, L, dtype)
    extra = _extra_args(op, dws, g)
    batched = (ws[None],) + tuple(a[None] for a in extra)  # (1, L, D), (1, L, D) | (1, D)
    calls = {"numpy": functools.partial(_CONV_NUMPY[op], ws, *extra)}
    for backend, fn in _CONV_RAW[op].items():
        calls[backend] = functools.partial(fn, *batched)
    calls["public"] = functools.partial(_CONV_PUBLIC[op], ws, *extra, backend="auto")
    return calls


def diag_calls(op, D, L, dtype="float64"):
    """{"numpy", "numba", "public"}."""
    ws, dws, g = layer_inputs(D, L, dtype)
    extra = _extra_args(op, dws, g)
    batched = (ws[None],) + tuple(a[None] for a in extra)
    return {
        "numpy": functools.partial(_DIAG_NUMPY[op], ws, *extra),
        "numba": functools.partial(_DIAG_RAW[op], *batched),
        "public": functools.partial(_DIAG_PUBLIC[op], ws, *extra),
    }


def _pack(mats):
    """The flat layout of ``_full`` for one network (what the public wrapper builds)."""
    widths = np.array([mats[0].shape[0]] + [m.shape[1] for m in mats], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(widths[:-1] * widths[1:]))).astype(np.int64)
    theta = np.concatenate([m.ravel() for m in mats])[None, :]
    return theta, widths, offsets


def full_calls(op, D, L, dtype="float64"):
    """{"numpy", "numba", "public"}; ``numba`` gets the layers already packed."""
    Ws, dWs, g = full_inputs(D, L, dtype)
    theta, widths, offsets = _pack(Ws)
    if op == "pfull":
        raw = (theta, widths, offsets)
        extra = ()
    elif op == "pfull_jvp":
        raw = (theta, _pack(dWs)[0], widths, offsets)
        extra = (dWs,)
    else:
        raw = (theta, g[None], widths, offsets)
        extra = (g,)
    return {
        "numpy": functools.partial(_FULL_NUMPY[op], Ws, *extra),
        "numba": functools.partial(_FULL_RAW[op], *raw),
        "public": functools.partial(_FULL_PUBLIC[op], Ws, *extra),
    }


@functools.lru_cache(maxsize=None)
def warm(kind, op, variant, D, L):
    """The callable, after one warm-up call (compilation, FFTW planning) and a
    timed second call; NotImplementedError (asv: skip) if that call is too slow."""
    fn = {"conv": conv_calls, "diag": diag_calls, "full": full_calls}[kind](op, D, L)[variant]
    fn()
    t0 = time.perf_counter()
    fn()
    if time.perf_counter() - t0 > SLOW_CALL_S:
        raise NotImplementedError(f"{op} {variant} at D={D}, L={L} takes > {SLOW_CALL_S} s per call")
    return fn


# --------------------------------------------------------------------------- asv: conv


class _ConvSuite:
    params = [("numpy",) + CONV_BACKENDS + ("public",), SIZES, DEPTHS]
    param_names = ["variant", "D", "L"]
    timeout = 300
    op = None

    def setup(self, variant, D, L):
        self.fn = warm("conv", self.op, variant, D, L)
        self.fn()  # asv re-runs setup before each sample: keep caches as warm as in a loop


class PConv(_ConvSuite):
    op = "pconv"

    def time_pconv(self, variant, D, L):
        self.fn()


class PConvJVP(_ConvSuite):
    op = "pconv_jvp"

    def time_pconv_jvp(self, variant, D, L):
        self.fn()


class PConvVJP(_ConvSuite):
    op = "pconv_vjp"

    def time_pconv_vjp(self, variant, D, L):
        self.fn()


# --------------------------------------------------------------------------- asv: diag, full


class PDiag:
    params = [("numpy", "numba", "public"), SIZES, DEPTHS]
    param_names = ["variant", "D", "L"]
    timeout = 120

    def setup(self, variant, D, L):
        self.fns = {op: warm("diag", op, variant, D, L) for op in DIAG_OPS}

    def time_pdiag(self, variant, D, L):
        self.fns["pdiag"]()

    def time_pdiag_jvp(self, variant, D, L):
        self.fns["pdiag_jvp"]()

    def time_pdiag_vjp(self, variant, D, L):
        self.fns["pdiag_vjp"]()


class PFull:
    params = [("numpy", "numba", "public"), FULL_SIZES, DEPTHS]
    param_names = ["variant", "D", "L"]
    timeout = 300

    def setup(self, variant, D, L):
        self.fns = {op: warm("full", op, variant, D, L) for op in FULL_OPS}

    def time_pfull(self, variant, D, L):
        self.fns["pfull"]()

    def time_pfull_jvp(self, variant, D, L):
        self.fns["pfull_jvp"]()

    def time_pfull_vjp(self, variant, D, L):
        self.fns["pfull_vjp"]()


# --------------------------------------------------------------------------- asv: call cost


class CallOverhead:
    """A Python-level call at D=16, L=2, where the arithmetic is negligible: the
    public wrapper (validation, broadcasting, reshapes) vs the raw jitted kernel
    (Numba's dispatcher only)."""

    def setup(self):
        ws, dws, g = layer_inputs(16, 2)
        self.ws = ws
        self.ws3 = np.ascontiguousarray(ws[None])
        K.pconv(self.ws, backend="direct")
        _direct.pconv_direct(self.ws3)

    def time_public_pconv_direct(self):
        K.pconv(self.ws, backend="direct")

    def time_public_pconv_auto(self):
        K.pconv(self.ws)

    def time_raw_pconv_direct(self):
        _direct.pconv_direct(self.ws3)

    def time_numpy_pconv(self):
        pconv_numpy(self.ws)


# --------------------------------------------------------------------------- asv: cold start


_FRESH_NUMBA_CACHE = """
import atexit, os, shutil, tempfile
_d = tempfile.mkdtemp(prefix="fastbias-numba-")
atexit.register(shutil.rmtree, _d, True)
os.environ["NUMBA_CACHE_DIR"] = _d
"""

_FIRST_CALL = """
import numpy as np
import fastbias.kernels as K
K.{op}(np.ones((2, 16)), backend="{backend}")
"""


class ColdStart:
    """A fresh interpreter: ``import fastbias.kernels`` and a first call. With the
    on-disk cache warm (the usual second run) the first call loads machine code; with
    an empty ``NUMBA_CACHE_DIR`` it compiles (what ``fastbias.warmup()`` pays once)."""

    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self):
        # Fill the on-disk cache for the "cached" cases (a no-op when it is warm).
        for backend in ("direct", "rfft"):
            K.pconv(np.ones((2, 16)), backend=backend)

    def timeraw_import_kernels(self):
        return "import fastbias.kernels"

    def timeraw_first_pconv_direct_cached(self):
        return _FIRST_CALL.format(op="pconv", backend="direct")

    def timeraw_first_pconv_rfft_cached(self):
        return _FIRST_CALL.format(op="pconv", backend="rfft")

    def timeraw_first_pconv_direct_compile(self):
        return _FIRST_CALL.format(op="pconv", backend="direct"), _FRESH_NUMBA_CACHE

    def timeraw_first_pconv_rfft_compile(self):
        return _FIRST_CALL.format(op="pconv", backend="rfft"), _FRESH_NUMBA_CACHE
