"""Read an image's partition table without attaching it (no privileges needed).

Raw images are read by sfdisk directly. Other formats: ``qemu-img dd`` copies the first MiB
(MBR, primary GPT header and entries) to a temporary raw file, which is then extended
(sparsely) to the image's virtual size so sfdisk sees the right disk size; the missing backup
GPT header only costs a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import proc

log = logging.getLogger(__name__)

HEAD_BYTES = 1024 * 1024
TOOL_TIMEOUT = 120.0
_NUMBER_SUFFIX = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class PartitionTable:
    """The partition table as sfdisk reports it, or None with the reason it is missing."""

    table: dict[str, Any] | None
    reason: str = ""


def _clean(table: dict[str, Any], image: Path) -> dict[str, Any]:
    """Name the image instead of the temporary file, and number the partitions."""
    cleaned = dict(table)
    cleaned["device"] = str(image)
    partitions = []
    for entry in table.get("partitions", []):
        part = {k: v for k, v in entry.items() if k != "node"}
        match = _NUMBER_SUFFIX.search(str(entry.get("node", "")))
        if match:
            part["number"] = int(match.group(1))
        partitions.append(part)
    cleaned["partitions"] = partitions
    return cleaned


async def _sfdisk(path: Path) -> dict[str, Any]:
    result = await proc.run(["sfdisk", "-J", str(path)], timeout=TOOL_TIMEOUT, capture_stdout=True)
    doc = json.loads(result.stdout)
    table = doc.get("partitiontable")
    if not isinstance(table, dict):
        raise ValueError("sfdisk output has no partitiontable")
    return table


async def _head_copy(image: Path, fmt: str, virtual_size: int, tmp: Path) -> None:
    head = min(HEAD_BYTES, virtual_size)
    argv = ["qemu-img", "dd", "-f", fmt, "-O", "raw", f"bs={head}", "count=1"]
    await proc.run([*argv, f"if={image}", f"of={tmp}"], timeout=TOOL_TIMEOUT)
    os.truncate(tmp, virtual_size)


async def read_partition_table(
    image: Path, fmt: str, virtual_size: int, scratch_dir: Path
) -> PartitionTable:
    """Read the partition table of a checked image.

    Never raises for a missing or unreadable table: the reason is returned instead.
    """
    if virtual_size <= 0:
        return PartitionTable(None, "the image is empty")
    if fmt == "raw":
        target = image
        tmp = None
    else:
        scratch_dir.mkdir(parents=True, exist_ok=True)
        tmp = scratch_dir / f"head-{uuid.uuid4().hex}.raw"
        target = tmp
    try:
        if tmp is not None:
            await _head_copy(image, fmt, virtual_size, tmp)
        table = await _sfdisk(target)
    except proc.CommandFailed as exc:
        return PartitionTable(None, exc.stderr_tail.strip() or str(exc))
    except (proc.CommandError, ValueError, OSError) as exc:
        return PartitionTable(None, str(exc))
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return PartitionTable(_clean(table, image))
