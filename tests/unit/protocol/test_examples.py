from __future__ import annotations

from pathlib import Path

import pytest

from devsupport.specs import EXAMPLES

UPSTREAM = Path(__file__).resolve().parents[4] / "shared" / "examples"


def test_repository_has_the_three_upstream_examples() -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.json"))
    assert names == ["convert-job.json", "inspect-job.json", "offline-fix-job.json"]


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="../shared/examples is not beside this clone")
def test_copy_matches_upstream() -> None:
    for upstream in UPSTREAM.glob("*.json"):
        assert (EXAMPLES / upstream.name).read_bytes() == upstream.read_bytes()
