"""The folders of tests/: each one's marker, and what a machine needs to run it.

tests/conftest.py applies them to every collected test; tests/unit/test_markers.py checks that
every folder with tests is listed and that ``pytest -m <marker>`` selects exactly its folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.host import missing_for_boot, missing_for_privileged

TESTS = Path(__file__).resolve().parents[1]

# Folder (under tests/) -> marker. pyproject.toml declares each marker;
# tests/unit/test_markers.py checks that every folder with tests is listed here.
FOLDER_MARKERS = {
    "unit": "unit",
    "component": "component",
    "store": "store",
    "client": "client",
    "integration": "integration",
    "reliability": "reliability",
    "privileged": "privileged",
    "ha": "ha",
    "security": "security",
    "observability": "observability",
    "deploy": "deploy",
    "bench": "bench",
    "libvirt": "libvirt",
    "boot": "boot",
}

# Folder -> why its tests cannot run on this machine (None: they can). Asked once per run.
FOLDER_REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "privileged": missing_for_privileged,
    "boot": missing_for_boot,
}


def folder_of(path: Path) -> str | None:
    """The top-level folder of tests/ that ``path`` lies in (None: outside any folder)."""
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 else None
