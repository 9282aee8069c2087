"""Fixtures for the control-plane unit tests (the builders are in tests/support/builders.py)."""

from __future__ import annotations

import pytest

from tests.support.builders import Builders


@pytest.fixture
def build() -> type[Builders]:
    return Builders
