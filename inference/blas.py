"""numpy's BLAS thread count, set where a process must not let BLAS take more cores than it is given.

Why: OpenBLAS starts a thread per core for a large enough product and spins them while they
wait. In the recommender's process (one batch at a time, beside the worker's process and the
broker on the same cores) the catalog's matrix product (inference/catalog_matrix.py) took the
process from 42% to 114% of a core at 1,000 events/s and made freshness worse, not better
(bench/reports/perf-20261207b).
"""

from __future__ import annotations

import os

import numpy as np


def blas_threads(n: int | None = None) -> int | None:
    """Set (when `n` is given) and return numpy's OpenBLAS thread count, or None if unknown.

    numpy's wheels bundle scipy-openblas; its setter is reached through ctypes because
    threadpoolctl is not a dependency.
    """
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "libscipy_openblas*.so"))
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    for suffix in ("64_", "_64_", ""):
        setter = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
        getter = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
        if setter is not None and getter is not None:
            if n is not None:
                setter(ctypes.c_int(n))
            return int(getter())
    return None
