"""Shared pytest hooks for every test layer, and the one place that marks tests.

Each top-level folder of tests/ is one layer and has one marker of the same name, so
``pytest -m ha`` runs exactly tests/ha. A conftest's ``pytestmark`` does nothing, hence this hook.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from devsupport.images import SLOW_IMAGE_MIB, write_random_raw
from tests.support.host import missing_for_privileged

TESTS = Path(__file__).resolve().parent

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
}

# Folder -> why its tests cannot run on this machine (None: they can). Asked once per run.
FOLDER_REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "privileged": missing_for_privileged,
}


def folder_of(path: Path) -> str | None:
    """The top-level folder of tests/ that ``path`` lies in (None: outside any folder)."""
    try:
        parts = path.resolve().relative_to(TESTS).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its folder's marker (before ``-m`` deselects), and skip the
    folders whose requirements this machine lacks."""
    skip_reasons: dict[str, str | None] = {}
    for item in items:
        folder = folder_of(item.path)
        if folder is None or folder not in FOLDER_MARKERS:
            continue
        item.add_marker(FOLDER_MARKERS[folder])
        if folder in FOLDER_REQUIREMENTS:
            if folder not in skip_reasons:
                skip_reasons[folder] = FOLDER_REQUIREMENTS[folder]()
            reason = skip_reasons[folder]
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (no pytest-asyncio needed)."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


@pytest.fixture(scope="session")
def slow_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Incompressible raw data: a compressed qcow2 conversion of it takes a few seconds."""
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is not installed: run `make setup`")
    path = tmp_path_factory.mktemp("sources") / "slow.img"
    write_random_raw(path, SLOW_IMAGE_MIB)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the item (``item.rep_call``) so fixtures can print the
    processes' logs when a test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
