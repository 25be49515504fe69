"""Compilation settings shared by every fastbias kernel.

One central place for the Numba flags (as stumpy's ``config.py``):

* ``FASTMATH`` allows reassociation, contraction (FMA) and the other value-safe
  relaxations that let LLVM vectorize reductions, but *not* ``nnan``/``ninf``:
  a diverging computation must still produce NaN/inf instead of being assumed
  away by the optimizer.
* ``cache=True`` so that compiled kernels are reused across processes.
* ``nogil=True`` so callers may run kernels from several Python threads.
"""

import numba

FASTMATH = frozenset({"nsz", "arcp", "contract", "reassoc"})

JIT_OPTIONS = dict(cache=True, fastmath=set(FASTMATH), nogil=True, error_model="numpy")

# For code whose rounding is part of the algorithm (Cody-Waite range reduction):
# FMA contraction only, no reassociation.
EXACT_OPTIONS = dict(JIT_OPTIONS, fastmath={"contract"})


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

