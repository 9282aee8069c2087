"""What a capability probe returns, and the checks several probes share."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from agent import proc

# Bit numbers from linux/capability.h.
CAP_SYS_CHROOT = 18
CAP_SYS_ADMIN = 21


@dataclass(frozen=True)
class ProbeResult:
    """One measured capability; ``detail`` says what was found or why it is missing."""

    name: str
    available: bool
    version: str = ""
    detail: str = ""


def available(name: str, detail: str, version: str = "") -> ProbeResult:
    return ProbeResult(name=name, available=True, version=version, detail=detail)


def missing(name: str, why: str) -> ProbeResult:
    return ProbeResult(name=name, available=False, detail=f"not available: {why}")


def effective_capabilities(status_file: Path = Path("/proc/self/status")) -> int:
    """The CapEff bit mask of this process (0 when it cannot be read)."""
    try:
        for line in status_file.read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def has_capability(bit: int) -> bool:
    return bool(effective_capabilities() >> bit & 1)


def open_device(path: str, flags: int = os.O_RDWR) -> str | None:
    """Try to open a device node; None when it worked, else why it did not."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return f"{path} does not exist"
    except OSError as exc:
        return f"cannot open {path}: {exc.strerror}"
    os.close(fd)
    return None


def tool_version(binary: str, args: list[str], pattern: str) -> str:
    """Run ``binary args`` and return the first match of ``pattern`` ('' when none).

    Raises:
        proc.CommandError: the tool failed or hung.
    """
    result = proc.run_sync([binary, *args], timeout=10.0)
    match = re.search(pattern, result.stdout + "\n" + result.stderr_tail)
    return match.group(1) if match else ""
