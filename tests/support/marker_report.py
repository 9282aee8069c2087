"""A pytest plugin for tests/unit/test_markers.py: after collection, write every test's node
id and marker names, as JSON, to the file named by ``$H2K_MARKER_REPORT``."""

from __future__ import annotations

import json
import os

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    report = {item.nodeid: sorted({m.name for m in item.iter_markers()}) for item in session.items}
    with open(os.environ["H2K_MARKER_REPORT"], "w") as f:
        json.dump(report, f, indent=1)
