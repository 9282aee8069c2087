"""Smoke run of bench.source_check: a tiny image per format, one round; it prints its table."""

from __future__ import annotations

import pytest

from bench import source_check


def test_source_check_prints_walk_check_and_convert_per_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    source_check.main(["--sizes-gib", "0.0625", "--rounds", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert {row.split("|")[1].strip() for row in rows[1:]} == set(source_check.FORMATS)
