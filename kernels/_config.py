"""Compilation settings shared by every fastbias kernel.

One central place for the Numba flags (as stumpy's ``config.py``):

* ``FASTMATH`` allows reassociation, contraction (FMA) and the other value-safe
  relaxations that let LLVM vectorize reductions, but *not* ``nnan``/``ninf``:
  a diverging computation must still produce NaN/inf instead of being assumed
  away by the optimizer.
* ``cache=True`` so that compiled kernels are reused across processes.
* ``nogil=True`` so callers may run kernels from several Python threads.
"""

import os

import numba

# Numba leaves LLVM's SLP vectorizer off by default (NUMBA_SLP_VECTORIZE=0). The GD
# loop over runs (``_lanes``) is written as fixed eight-wide loops that LLVM unrolls
# fully and that only the SLP vectorizer turns into vector instructions (3-4x
# faster, measured with benchmarks/peers.py). It changes no floating-point
# semantics beyond ``FASTMATH``. An explicit NUMBA_SLP_VECTORIZE is respected; the
# setting applies to code compiled after ``fastbias.kernels`` is imported.
if "NUMBA_SLP_VECTORIZE" not in os.environ:
    numba.config.SLP_VECTORIZE = 1

FASTMATH = frozenset({"nsz", "arcp", "contract", "reassoc"})

JIT_OPTIONS = dict(cache=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy")

# For code whose rounding is part of the algorithm (Cody-Waite range reduction):
# FMA contraction only, no reassociation.
EXACT_OPTIONS = dict(JIT_OPTIONS, fastmath={"contract"})


# Numba's ``noalias`` compiler flag (used by its parfor gufuncs) marks every pointer
# argument ``noalias``: LLVM then vectorizes loops that read some arrays and write
# others without runtime overlap checks (which, with many arrays, make it give up
# or dominate at small sizes). Numba does not expose the flag in ``njit``; we map
# an option onto it. Should a Numba release drop the flag, kernels compile
# without it: the same results, only slower.
#
# ``noalias`` kernels also run without Numba's reference counting (``_nrt=False``):
# they allocate nothing, and the atomic increments and decrements of every array
# argument on entry and exit cost more than the work of a small phase.
try:
    from numba.core.cpu import CPUTargetOptions
    from numba.core.options import TargetOptions

    if not hasattr(CPUTargetOptions, "_fastbias_noalias"):
        CPUTargetOptions._fastbias_noalias = TargetOptions.Mapping("noalias")
    NOALIAS_OPTIONS = dict(JIT_OPTIONS, _fastbias_noalias=True, _nrt=False)
except Exception:  # pragma: no cover - depends on Numba's internals
    NOALIAS_OPTIONS = dict(JIT_OPTIONS)


def kernel(fn):
    """Compile ``fn`` as a nopython kernel with the project-wide options."""
    return numba.njit(**JIT_OPTIONS)(fn)


def inline_kernel(fn):
    """Like ``kernel``, inlined into its (jitted) callers at Numba-IR level: the
    small helpers of the GD loop would otherwise pay a call with every array
    argument marshalled, every iteration."""
    return numba.njit(inline="always", **JIT_OPTIONS)(fn)


def exact_kernel(fn):
    """Like ``kernel``, but without reassociation (see ``EXACT_OPTIONS``)."""
    return numba.njit(**EXACT_OPTIONS)(fn)



# Strict IEEE arithmetic (no fastmath flag at all: no FMA contraction, no
# reassociation): every value is what the source's operations give, whether LLVM
# vectorizes an operation or not. The SIMD-lane loop (``_lanes``) relies on it for
# results that do not depend on the lane a run occupies.
IEEE_OPTIONS = dict(JIT_OPTIONS, fastmath=False)
IEEE_NOALIAS_OPTIONS = dict(NOALIAS_OPTIONS, fastmath=False)


def ieee_kernel(fn):
    """Like ``kernel``, with strict IEEE arithmetic (``IEEE_OPTIONS``)."""
    return numba.njit(**IEEE_OPTIONS)(fn)


def ieee_inline_kernel(fn):
    """``ieee_kernel`` inlined into its callers at Numba-IR level."""
    return numba.njit(inline="always", **IEEE_OPTIONS)(fn)


def fast_noalias_kernel(fn):
    """Like ``kernel`` (``FASTMATH``), with ``noalias`` array arguments (see
    ``noalias_kernel`` for the contract)."""
    return numba.njit(**NOALIAS_OPTIONS)(fn)


def noalias_kernel(fn):
    """Like ``ieee_kernel``, with every array argument declared not to overlap any
    other (LLVM ``noalias``). Callers must pass distinct arrays for distinct
    arguments; the function must not keep or return its arguments (no views)."""
    return numba.njit(**IEEE_NOALIAS_OPTIONS)(fn)
