"""Fixtures for the h2kctl tests: a JobService double on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.job_service_double import FakeJobService, RunningDouble, served


@pytest.fixture
def control_plane() -> Iterator[RunningDouble]:
    """A FakeJobService served on a free loopback port."""
    with served(FakeJobService()) as running:
        yield running
