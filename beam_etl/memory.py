"""Which allocator Arrow uses in beam-etl processes (driver and workers).

pyarrow's default pool is mimalloc, which keeps freed pages for reuse. A Beam stage that
finishes frees its Arrow state while the runner holds the same data encoded (e.g. the
combined partial aggregates waiting for the next stage), so the retained pages add to the
peak: on the 10M-row benchmark job the peak RSS was ~1,000 MB with mimalloc, ~770 MB with
jemalloc (whose freed pages decay back to the OS), at the same speed; purging mimalloc at
once (``MIMALLOC_PURGE_DELAY=0``) gave ~810 MB but cost ~18% of the run time
(``python -m benchmarks.run`` measures it). An explicit ``ARROW_DEFAULT_MEMORY_POOL``
setting wins.

Example:
    >>> use_jemalloc()  # doctest: +SKIP
    'jemalloc'
"""

from __future__ import annotations

import os

import pyarrow as pa

__all__ = ["use_jemalloc"]


def use_jemalloc() -> str:
    """Make jemalloc Arrow's default pool unless the user chose one; returns the backend in use."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except (NotImplementedError, pa.ArrowNotImplementedError):  # a pyarrow built without jemalloc
            pass
    return pa.default_memory_pool().backend_name
