"""The garbage collector of a long-running service, set for many short-lived objects.

A service's start-up leaves hundreds of thousands of long-lived objects (modules, grpc and
protobuf descriptors, pydantic schemas), and every full collection walked them all again:
in a 2,000-job wave the control plane spent ~10 % of its CPU in the collector. Once the
service has started, :func:`settle_after_start` moves everything alive into the permanent
generation (``gc.freeze``, never scanned again; still freed by reference counting) and lets
more allocations pass between young collections, whose cost does not grow with the heap.
Reference cycles are still collected. BENCHMARKS.md §3 has the measurement.
"""

from __future__ import annotations

import gc

# Allocations (net of frees) between two young-generation collections; CPython's default is
# 700. The older generations keep CPython's defaults (collected every 10 younger ones).
YOUNG_THRESHOLD = 50_000


def settle_after_start() -> None:
    """Freeze what start-up allocated and space the young collections out."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
