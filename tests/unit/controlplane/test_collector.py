"""The control plane's collector settings after start-up (runtime.collector)."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import gc
from runtime.collector import YOUNG_THRESHOLD, settle_after_start
kept = [object() for _ in range(1000)]
settle_after_start()
assert gc.get_freeze_count() >= len(kept), gc.get_freeze_count()
assert gc.get_threshold()[0] == YOUNG_THRESHOLD, gc.get_threshold()
assert gc.isenabled()
# Cycles made after start-up are still collected.
class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a
del a, b
assert gc.collect() >= 2
print("ok")
"""


def test_start_up_objects_are_frozen_and_cycles_still_collected() -> None:
    # In a fresh interpreter: freezing this test process would change every other test's.
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
