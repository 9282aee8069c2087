"""A stand-in for HyperSDK's daemon mode, from the facts in the shared interop notes only.

It does what HyperSDK does and nothing more: copies the manifest to ``<queue>/<basename>`` with
plain writes (in pieces, with pauses, so a reader can see half of it), claims nothing, then
polls the output directory for ``<vm_name>.qcow2`` (success: existence alone) and, failing
that, ``<vm_name>.error`` (its whole content is the error). The check HyperSDK does not do,
whether the file that appeared is complete, is the ``on_success`` callback, run the moment the
file exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    path: Path
    error: str = ""


def drop(queue: Path, basename: str, document: bytes, pieces: int = 4, pause: float = 0.2) -> Path:
    """Write ``document`` to ``queue/basename`` in place, ``pieces`` writes ``pause`` apart."""
    target = queue / basename
    size = max(1, -(-len(document) // pieces))
    with target.open("wb") as handle:
        for start in range(0, len(document), size):
            handle.write(document[start : start + size])
            handle.flush()
            time.sleep(pause)
    return target


def wait_for_result(
    output: Path,
    vm_name: str,
    *,
    timeout: float = 240.0,
    on_success: Callable[[Path], None] | None = None,
) -> Outcome:
    """Poll like HyperSDK: ``<vm>.qcow2`` first, then ``<vm>.error``."""
    deadline = time.monotonic() + timeout
    image = output / f"{vm_name}.qcow2"
    error = output / f"{vm_name}.error"
    while time.monotonic() < deadline:
        if image.exists():
            if on_success is not None:
                on_success(image)
            return Outcome(True, image)
        if error.exists():
            return Outcome(False, error, error.read_text())
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"neither {image} nor {error} within {timeout}s")
