"""Fixtures for the agent unit tests (builders are in builders.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.agent.builders import AgentDirs, make_dirs


@pytest.fixture
def dirs(tmp_path: Path) -> AgentDirs:
    """Empty allowed input and output directories and a state directory."""
    return make_dirs(tmp_path)
