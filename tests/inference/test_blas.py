"""numpy's BLAS thread count."""

from __future__ import annotations

from inference.blas import blas_threads


def test_blas_threads_reads_back_what_it_sets():
    before = blas_threads()
    if before is None:  # a numpy without bundled scipy-openblas
        return
    try:
        assert blas_threads(1) == 1
    finally:
        blas_threads(before)
