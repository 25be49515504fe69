"""asv suite for ``fastbias.theory.max_margin``: each penalty ("l2", "l1",
"fourier_l1") at D in {16, 64, 256}, on ``gaussian_dataset(D // 2, D, seed=0)``
(N < D: separable, with many more features than samples, as in the paper's
experiments).

``setup()`` solves a tiny problem first, so cvxpy's imports and the solvers'
first-call costs stay out of ``time_*``. BLAS runs on one thread during the suite
(threadpoolctl): ``max_margin``'s polishing calls ``numpy.linalg.lstsq`` about a
hundred times, and with OpenBLAS's default threads on a busy 2-core machine that
was 20-40x slower (0.5 s vs 11-24 s at D = 256, "l1"), which would make the timings
measure the machine's load instead of the code.
"""

import functools
import warnings

from threadpoolctl import threadpool_limits

from fastbias.data import gaussian_dataset

PENALTIES = ("l2", "l1", "fourier_l1")
SIZES = (16, 64, 256)


@functools.lru_cache(maxsize=None)
def dataset(D):
    return gaussian_dataset(D // 2, D, seed=0)


class MaxMargin:
    params = [PENALTIES, SIZES]
    param_names = ["penalty", "D"]
    timeout = 300

    def setup(self, penalty, D):
        from fastbias import theory

        self.theory = theory
        self._blas = threadpool_limits(1, user_api="blas")
        self.X, self.y = dataset(D)
        Xs, ys = dataset(8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            theory.max_margin(Xs, ys, penalty)

    def teardown(self, penalty, D):
        self._blas.restore_original_limits()

    def time_max_margin(self, penalty, D):
        self.theory.max_margin(self.X, self.y, penalty)
