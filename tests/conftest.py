"""Shared pytest hooks for every test layer, and the one place that marks tests.

Each top-level folder of tests/ is one layer with one marker (tests/support/folders.py), so
``pytest -m ha`` runs exactly tests/ha. A conftest's ``pytestmark`` does nothing, hence the hook.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
from pathlib import Path

import pytest

from devsupport.images import SLOW_IMAGE_MIB, write_random_raw
from tests.support.folders import FOLDER_MARKERS, FOLDER_REQUIREMENTS, folder_of


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
