"""Shared pytest hooks for every test layer."""

from __future__ import annotations

import asyncio
import inspect
import shutil
from pathlib import Path

import pytest

from tests.support.images import SLOW_IMAGE_MIB, write_random_raw


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
