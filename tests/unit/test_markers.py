"""Each folder of tests/ carries its own marker, so ``pytest -m <folder>`` runs that folder.

A ``pytestmark`` in a conftest is silently ignored by pytest; these tests fail when a folder's
tests lose their marker, pick up another folder's, or a folder has no marker at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.folders import FOLDER_MARKERS, TESTS

ROOT = TESTS.parent


def pytest_run(*args: str, env: dict[str, str] | None = None) -> str:
    """``pytest --collect-only -q --strict-markers ARGS`` from the repository root; its stdout."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "--strict-markers", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert run.returncode == 0, f"pytest {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def node_ids(collect_output: str) -> set[str]:
    return {line for line in collect_output.splitlines() if "::" in line}


@pytest.fixture(scope="module")
def markers_by_test(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Every collected test of tests/ and the names of its markers."""
    report = tmp_path_factory.mktemp("markers") / "report.json"
    pytest_run("-p", "tests.support.marker_report", "tests", env={"H2K_MARKER_REPORT": str(report)})
    return dict(json.loads(report.read_text()))


def test_every_folder_with_tests_has_a_marker():
    with_tests = {path.relative_to(TESTS).parts[0] for path in TESTS.glob("*/**/test_*.py")}
    assert with_tests - set(FOLDER_MARKERS) == set()


def test_every_folder_marker_is_declared(pytestconfig: pytest.Config):
    declared = {line.split(":", 1)[0].strip() for line in pytestconfig.getini("markers")}
    assert set(FOLDER_MARKERS.values()) - declared == set()


def test_each_test_carries_exactly_its_folders_marker(markers_by_test: dict[str, list[str]]):
    folder_markers = set(FOLDER_MARKERS.values())
    wrong = {}
    for node_id, markers in markers_by_test.items():
        folder = Path(node_id.split("::", 1)[0]).relative_to("tests").parts[0]
        carried = folder_markers & set(markers)
        if carried != {FOLDER_MARKERS[folder]}:
            wrong[node_id] = sorted(carried)
    assert wrong == {}
    assert {Path(n).parts[1] for n in markers_by_test} >= {"unit", "integration", "ha"}


def test_dash_m_selects_exactly_the_folder(markers_by_test: dict[str, list[str]]):
    # -m deselects after the marking hook ran: the ha tests alone, none of reliability's.
    selected = node_ids(pytest_run("-m", "ha", "tests/ha", "tests/reliability"))
    assert selected == {n for n in markers_by_test if n.startswith("tests/ha/")}
    assert selected
