"""Bad input never reaches jitted code: every public kernel raises TypeError (wrong
kind of object or dtype) or ValueError (wrong shape, size, values) with a message
that names the offending argument."""

import re

import numpy as np
import pytest

from fastbias import kernels as K

L, D = 3, 4


def ok(shape=(L, D), dtype=np.float64):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def full_ok(dtype=np.float64):
    return [ok((D, 3), dtype), ok((3, 2), dtype), ok((2, 1), dtype)]


def named(name):
    """A regex matching ``name`` as a whole word anywhere in the message (ws, not dws)."""
    return rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])"


def starts(name):
    """A regex for a message about ``name`` alone: it starts with the argument's name."""
    return rf"^{re.escape(name)}(?![A-Za-z_])"


# Every public kernel as (call, {argument name: valid value}); the call takes keywords.
CONV_BACKENDS = K.BACKENDS + ("auto",)


def _calls():
    calls = []
    for b in CONV_BACKENDS:
        calls += [
            (f"xcorr[{b}]", lambda h, w, b=b: K.xcorr(h, w, backend=b), {"h": ok((D,)), "w": ok((D,))}),
            (f"pconv[{b}]", lambda ws, b=b: K.pconv(ws, backend=b), {"ws": ok()}),
            (f"pconv_jvp[{b}]", lambda ws, dws, b=b: K.pconv_jvp(ws, dws, backend=b), {"ws": ok(), "dws": ok()}),
            (f"pconv_vjp[{b}]", lambda ws, g, b=b: K.pconv_vjp(ws, g, backend=b), {"ws": ok(), "g": ok((D,))}),
        ]
    calls += [
        ("pdiag", lambda ws: K.pdiag(ws), {"ws": ok()}),
        ("pdiag_jvp", lambda ws, dws: K.pdiag_jvp(ws, dws), {"ws": ok(), "dws": ok()}),
        ("pdiag_vjp", lambda ws, g: K.pdiag_vjp(ws, g), {"ws": ok(), "g": ok((D,))}),
    ]
    return calls


ARRAY_CALLS = _calls()
ARRAY_ARGS = [(name, fn, args, arg) for name, fn, args in ARRAY_CALLS for arg in args]
ARRAY_IDS = [f"{name}-{arg}" for name, _, _, arg in ARRAY_ARGS]


def _with(args, arg, value):
    out = dict(args)
    out[arg] = value
    return out


# --------------------------------------------------------------------------- the valid calls work


@pytest.mark.parametrize("name, fn, args", ARRAY_CALLS, ids=[c[0] for c in ARRAY_CALLS])
def test_valid_calls_work(name, fn, args):
    out = fn(**args)
    assert np.all(np.isfinite(out))


# --------------------------------------------------------------------------- ndim


@pytest.mark.parametrize("name, fn, args, arg", ARRAY_ARGS, ids=ARRAY_IDS)
def test_too_few_dimensions(name, fn, args, arg):
    bad = np.float64(1.0) if args[arg].ndim == 1 else ok((D,))  # 0-d signal, 1-d layer stack
    with pytest.raises(ValueError, match=starts(arg)):
        fn(**_with(args, arg, bad))
    with pytest.raises(ValueError, match=starts(arg)):
        fn(**_with(args, arg, np.asarray(bad)))


def test_g_zero_dimensional():
    for fn in (K.pconv_vjp, K.pdiag_vjp):
        with pytest.raises(ValueError, match=named("g")):
            fn(ok(), np.array(1.0))
    with pytest.raises(ValueError, match=named("g")):
        K.pfull_vjp(full_ok(), np.array(1.0))


def test_ws_one_dimensional():
    for fn in (K.pconv, K.pdiag):
        with pytest.raises(ValueError, match=named("ws")):
            fn(ok((D,)))


# --------------------------------------------------------------------------- mismatched D and L


@pytest.mark.parametrize("backend", CONV_BACKENDS)
def test_conv_mismatched_D_and_L(backend):
    with pytest.raises(ValueError, match=named("dws")):
        K.pconv_jvp(ok(), ok((L, D + 1)), backend=backend)
    with pytest.raises(ValueError, match=named("dws")):
        K.pconv_jvp(ok(), ok((L + 1, D)), backend=backend)
    with pytest.raises(ValueError, match=named("dws")):
        K.pconv_jvp(ok(), ok((L - 1, D - 1)), backend=backend)
    with pytest.raises(ValueError, match=named("g")):
        K.pconv_vjp(ok(), ok((D + 1,)), backend=backend)
    with pytest.raises(ValueError, match=named("g")):
        K.pconv_vjp(ok(), ok((2, D - 1)), backend=backend)
    with pytest.raises(ValueError, match=named("w")):
        K.xcorr(ok((D,)), ok((D + 1,)), backend=backend)
    with pytest.raises(ValueError, match=named("h")):
        K.xcorr(ok((2, D + 2)), ok((D,)), backend=backend)


def test_diag_mismatched_D_and_L():
    with pytest.raises(ValueError, match=named("dws")):
        K.pdiag_jvp(ok(), ok((L, D + 1)))
    with pytest.raises(ValueError, match=named("dws")):
        K.pdiag_jvp(ok(), ok((L + 1, D)))
    with pytest.raises(ValueError, match=named("g")):
        K.pdiag_vjp(ok(), ok((D + 1,)))


# --------------------------------------------------------------------------- pfull widths


@pytest.mark.parametrize(
    "Ws",
    [
        [ok((D, 3)), ok((2, 1))],  # D_1 does not chain
        [ok((D, 3)), ok((3, 2)), ok((3, 1))],  # D_2 does not chain
        [ok((D, 3)), ok((3, 2))],  # last width 2
        [ok((D, 2))],  # depth 1, last width 2
        [ok((D, 1)), ok((1, 1)), ok((1, 3))],  # chains, but ends in width 3
    ],
    ids=["D1", "D2", "last2", "depth1-last2", "last3"],
)
def test_pfull_widths(Ws):
    with pytest.raises(ValueError, match=named("Ws")):
        K.pfull(Ws)
    with pytest.raises(ValueError, match=named("Ws")):
        K.pfull_jvp(Ws, Ws)
    with pytest.raises(ValueError, match=named("Ws")):
        K.pfull_vjp(Ws, ok((D,)))
    # the same bad chain as the tangent of a valid Ws with as many layers
    valid = {1: [ok((D, 1))], 2: [ok((D, 3)), ok((3, 1))], 3: full_ok()}[len(Ws)]
    K.pfull_jvp(valid, valid)
    with pytest.raises(ValueError, match=named("dWs")):
        K.pfull_jvp(valid, Ws)


def test_pfull_layer_shapes_and_counts():
    Ws = full_ok()
    with pytest.raises(ValueError, match=named("dWs")):
        K.pfull_jvp(Ws, Ws[:2] + [ok((2, 1))] + [ok((1, 1))])  # one layer more
    with pytest.raises(ValueError, match=named("dWs")):
        K.pfull_jvp(Ws, [ok((D, 2)), ok((2, 1))])  # one layer fewer
    with pytest.raises(ValueError, match=named("dWs")):
        K.pfull_jvp(Ws, [ok((D, 2)), ok((2, 2)), ok((2, 1))])  # chains, but not Ws's widths
    with pytest.raises(ValueError, match=named("g")):
        K.pfull_vjp(Ws, ok((D + 1,)))
    with pytest.raises(ValueError, match=starts("Ws[1]")):
        K.pfull([ok((D, 3)), ok((3,)), ok((3, 1))])  # a 1-d layer
    with pytest.raises(ValueError, match=named("Ws")):
        K.pfull(ok((D, 1)))  # one matrix, not a sequence of layers


# --------------------------------------------------------------------------- empty arrays


@pytest.mark.parametrize("name, fn, args, arg", ARRAY_ARGS, ids=ARRAY_IDS)
def test_empty_arrays(name, fn, args, arg):
    shape = args[arg].shape
    for axis in range(len(shape) + 1):  # a zero in every axis, and an empty batch axis
        bad_shape = shape[:axis] + (0,) + shape[axis + 1:] if axis < len(shape) else (0,) + shape
        with pytest.raises(ValueError, match=starts(arg)):
            fn(**_with(args, arg, np.zeros(bad_shape)))


def test_depth_zero():
    with pytest.raises(ValueError, match=named("ws")):
        K.pconv(np.zeros((0, D)))
    with pytest.raises(ValueError, match=named("ws")):
        K.pdiag(np.zeros((0, D)))
    with pytest.raises(ValueError, match=named("ws")):
        K.pconv_jvp(np.zeros((0, D)), np.zeros((0, D)))
    with pytest.raises(ValueError, match=named("Ws")):
        K.pfull([])
    with pytest.raises(ValueError, match=named("Ws")):
        K.pfull(())
    with pytest.raises(ValueError, match=named("Ws")):
        K.pfull_jvp([], [])
    with pytest.raises(ValueError, match=named("Ws")):
        K.pfull_vjp([], ok((D,)))
    with pytest.raises(ValueError, match=named("dWs")):
        K.pfull_jvp(full_ok(), [])


def test_pfull_empty_layers():
    for Ws in ([np.zeros((D, 0)), np.zeros((0, 1))], [np.zeros((0, 1))], [ok((D, 3)), np.zeros((3, 0, 1))]):
        with pytest.raises(ValueError, match=named("Ws")):
            K.pfull(Ws)
    with pytest.raises(ValueError, match=named("g")):
        K.pfull_vjp(full_ok(), np.zeros((0, D)))


# --------------------------------------------------------------------------- NaN and inf


def _poisoned(arr, value, flat_index):
    out = arr.copy()
    out.reshape(-1)[flat_index] = value
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name, fn, args, arg", ARRAY_ARGS, ids=ARRAY_IDS)
def test_nan_and_inf(name, fn, args, arg, value, dtype):
    args = {k: v.astype(dtype) for k, v in args.items()}
    size = args[arg].size
    for i in sorted({0, size // 2, size - 1}):  # first, middle and last element
        with pytest.raises(ValueError, match=starts(arg)):
            fn(**_with(args, arg, _poisoned(args[arg], value, i)))


def test_nan_with_finite_overflowing_sum_and_batch():
    # finite values whose sum overflows are fine; a NaN deep in a batch is not
    big = np.full((2, L, D), np.finfo(np.float32).max, np.float32)
    assert K.pdiag(big).shape == (2, D)
    bad = ok((5, 2, L, D))
    bad[4, 1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=named("ws")):
        K.pconv(bad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_pfull_nan_and_inf(value, dtype):
    Ws = full_ok(dtype)
    for l in range(3):
        bad = [W.copy() for W in Ws]
        bad[l].reshape(-1)[-1] = value
        with pytest.raises(ValueError, match=starts(f"Ws[{l}]")):
            K.pfull(bad)
        with pytest.raises(ValueError, match=starts(f"dWs[{l}]")):
            K.pfull_jvp(Ws, bad)
        with pytest.raises(ValueError, match=starts(f"Ws[{l}]")):
            K.pfull_vjp(bad, ok((D,), dtype))
    with pytest.raises(ValueError, match=named("g")):
        K.pfull_vjp(Ws, _poisoned(ok((D,), dtype), value, 1))


# --------------------------------------------------------------------------- dtypes and kinds of object

BAD_DTYPES = [np.int64, np.int32, np.uint8, np.bool_, np.complex128, np.complex64, np.float16, np.longdouble, object]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name, fn, args, arg", ARRAY_ARGS, ids=ARRAY_IDS)
def test_bad_dtypes(name, fn, args, arg, dtype):
    bad = np.ones(args[arg].shape, dtype=dtype)
    with pytest.raises(TypeError, match=starts(arg)):
        fn(**_with(args, arg, bad))


@pytest.mark.parametrize("bad", ["abc", b"abc", None, {"a": 1.0}, object()], ids=["str", "bytes", "None", "dict", "object"])
@pytest.mark.parametrize("name, fn, args, arg", ARRAY_ARGS, ids=ARRAY_IDS)
def test_not_arrays(name, fn, args, arg, bad):
    with pytest.raises(TypeError, match=starts(arg)):
        fn(**_with(args, arg, bad))


@pytest.mark.parametrize("name, fn, args, arg", ARRAY_ARGS, ids=ARRAY_IDS)
def test_nested_lists_of_wrong_kind(name, fn, args, arg):
    good = args[arg].tolist()
    fn(**_with(args, arg, good))  # plain nested lists of floats are fine
    ints = np.ones(args[arg].shape, dtype=np.int64).tolist()
    with pytest.raises(TypeError, match=starts(arg)):
        fn(**_with(args, arg, ints))
    ragged = [[1.0], [1.0, 2.0]]
    with pytest.raises(ValueError, match=starts(arg)):
        fn(**_with(args, arg, ragged))


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_pfull_bad_dtypes(dtype):
    Ws = full_ok()
    for l in range(3):
        bad = list(Ws)
        bad[l] = np.ones(Ws[l].shape, dtype=dtype)
        with pytest.raises(TypeError, match=starts(f"Ws[{l}]")):
            K.pfull(bad)
        with pytest.raises(TypeError, match=starts(f"dWs[{l}]")):
            K.pfull_jvp(Ws, bad)
    with pytest.raises(TypeError, match=named("g")):
        K.pfull_vjp(Ws, np.ones(D, dtype=dtype))


@pytest.mark.parametrize("bad", ["abc", b"abc", None, 3, 2.5], ids=["str", "bytes", "None", "int", "float"])
def test_pfull_not_sequences(bad):
    with pytest.raises(TypeError, match=named("Ws")):
        K.pfull(bad)
    with pytest.raises(TypeError, match=named("Ws")):
        K.pfull_vjp(bad, ok((D,)))
    with pytest.raises(TypeError, match=named("dWs")):
        K.pfull_jvp(full_ok(), bad)


def test_pfull_layers_that_are_not_arrays():
    for bad in ("abc", None, object()):
        with pytest.raises(TypeError, match=starts("Ws[1]")):
            K.pfull([ok((D, 3)), bad, ok((2, 1))])
    with pytest.raises(TypeError, match=named("g")):
        K.pfull_vjp(full_ok(), "abc")
    with pytest.raises(TypeError, match=named("g")):
        K.pfull_vjp(full_ok(), None)


# --------------------------------------------------------------------------- backend


CONV_FUNCS = [
    ("xcorr", lambda b: K.xcorr(ok((D,)), ok((D,)), backend=b)),
    ("pconv", lambda b: K.pconv(ok(), backend=b)),
    ("pconv_jvp", lambda b: K.pconv_jvp(ok(), ok(), backend=b)),
    ("pconv_vjp", lambda b: K.pconv_vjp(ok(), ok((D,)), backend=b)),
]


@pytest.mark.parametrize("bad", ["", "fft", "FFTW", "Direct", " rfft", "auto ", "numpy"])
@pytest.mark.parametrize("name, call", CONV_FUNCS, ids=[c[0] for c in CONV_FUNCS])
def test_bad_backend_name(name, call, bad):
    with pytest.raises(ValueError, match=named("backend")):
        call(bad)


@pytest.mark.parametrize("bad", [None, 1, b"rfft", ("rfft",), ["fftw"]], ids=["None", "int", "bytes", "tuple", "list"])
@pytest.mark.parametrize("name, call", CONV_FUNCS, ids=[c[0] for c in CONV_FUNCS])
def test_non_string_backend(name, call, bad):
    with pytest.raises(TypeError, match=named("backend")):
        call(bad)


# --------------------------------------------------------------------------- batch axes


def test_non_broadcasting_batch_axes():
    with pytest.raises(ValueError, match=named("dws")):
        K.pconv_jvp(ok((2, L, D)), ok((3, L, D)))
    with pytest.raises(ValueError, match=named("dws")):
        K.pconv_jvp(ok((2, 3, L, D)), ok((2, 2, L, D)))
    with pytest.raises(ValueError, match=named("g")):
        K.pconv_vjp(ok((2, L, D)), ok((3, D)))
    with pytest.raises(ValueError, match=named("dws")):
        K.pdiag_jvp(ok((2, L, D)), ok((3, L, D)))
    with pytest.raises(ValueError, match=named("g")):
        K.pdiag_vjp(ok((4, 2, L, D)), ok((3, D)))
    with pytest.raises(ValueError, match=named("w")):
        K.xcorr(ok((2, D)), ok((3, D)))
    with pytest.raises(ValueError, match=named("Ws")):
        K.pfull([ok((2, D, 3)), ok((3, 3, 1))])
    with pytest.raises(ValueError, match=named("dWs")):
        K.pfull_jvp([ok((2, D, 3)), ok((3, 1))], [ok((3, D, 3)), ok((3, 1))])
    with pytest.raises(ValueError, match=named("g")):
        K.pfull_vjp([ok((2, D, 3)), ok((3, 1))], ok((3, D)))


@pytest.mark.parametrize("backend", K.BACKENDS)
def test_errors_leave_later_calls_correct(backend):
    # a rejected call must not poison cached state (e.g. FFTW plans)
    ws = ok((2, L, D))
    before = K.pconv(ws, backend=backend)
    with pytest.raises(ValueError):
        K.pconv(np.full((2, L, D), np.nan), backend=backend)
    with pytest.raises(ValueError):
        K.pconv_vjp(ws, ok((D + 1,)), backend=backend)
    np.testing.assert_array_equal(K.pconv(ws, backend=backend), before)
