"""Smoke runs of the benchmark scripts: tiny sizes, seconds each; they must print their table.

Benchmarks are not tests (numbers are not asserted); these only keep the scripts working.
"""

from __future__ import annotations

import shutil

import pytest

from bench import (
    cli_start,
    convert,
    digest,
    fanout,
    last_mile,
    memory,
    migrate,
    repair_overlay,
    schedule,
    submit,
    wave,
)
from tests.support.host import missing_for_privileged


def table_rows(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("| ")]


def test_submit_prints_echo_and_h2k_rates(capsys):
    submit.main(["--seconds", "0.5", "--concurrency", "4", "--channels", "1", "--batch", "10"])
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert any(r.startswith("| h2k SubmitJob ") for r in rows)
    assert any(r.startswith("| h2k SubmitJobs x10") for r in rows)
    assert any(r.startswith("| echo ") for r in rows)
    assert "bar: h2k >= 60% of echo" in out


def test_submit_over_mutual_tls_prints_h2k_and_echo(capsys):
    args = ["--seconds", "0.3", "--warmup", "0.2", "--concurrency", "2", "--channels", "1"]
    submit.main([*args, "--batch", "0", "--tls", "on"])
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert any(r.startswith("| h2k SubmitJob ") for r in rows)
    assert any(r.startswith("| echo ") for r in rows)
    assert "TLS on" in out


def test_schedule_dispatches_every_job_and_prints_placements(capsys):
    schedule.main(["--jobs", "40", "--agents", "3", "--slots", "2", "--latency-jobs", "5"])
    out = capsys.readouterr().out
    assert any("placements/s over the drain" in r for r in table_rows(out))
    assert "bar: >= 1000 placements/s" in out


def test_fanout_every_watcher_sees_every_event(capsys):
    fanout.main(["--watchers", "1,40", "--rate", "100", "--seconds", "0.3", "--lead-in", "1"])
    out = capsys.readouterr().out
    rows = [[cell.strip() for cell in r.split("|")] for r in table_rows(out)[1:]]
    ways = {(r[1], int(r[2])) for r in rows}
    assert ways == {
        (way, n)
        for way in (
            "WatchJob",
            "WatchJobBatches",
            "bare grpc.aio WatchJob",
            "bare grpc.aio WatchJobBatches",
        )
        for n in (1, 40)
    }
    # events sent == the fewest any watcher saw, in seq order: no watcher missed one
    assert all(int(r[3]) == int(r[4]) and r[5] == "yes" for r in rows)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_memory_prints_controlplane_and_agent_rss(capsys):
    memory.main(["--jobs", "200", "--agents", "5", "--image-gib", "0.05"])
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert any("control plane, 200 finished jobs" in r for r in rows)
    assert any("agent, idle" in r for r in rows)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_convert_prints_every_way(capsys):
    convert.main(
        [
            "--size-gib",
            "0.0625",
            "--rounds",
            "1",
            "--subformats",
            "streamOptimized",
            "--modes",
            "compressed",
        ]
    )
    out = capsys.readouterr().out
    names = [r.split("|")[1].strip() for r in table_rows(out)[1:]]
    assert names[0] == "plain" and "cp --sparse" in names
    assert {"h2k", "h2k zstd", "hand agent argv", "hand agent argv zstd +wb"} <= set(names)
    assert "every way's output equals the source (qemu-img compare)" in out
    assert "bar: h2k <= 1.10 x best by hand" in out
    assert "h2k zstd phases (medians, s): CLI start + submit" in out


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_migrate_prints_vm_and_ova_tables_and_h2k_completes(capsys):
    migrate.main(["--disk-mib", "16,8", "--ova-gib", "0.03", "--rounds", "1"])
    out = capsys.readouterr().out
    names = [r.split("|")[1].strip() for r in table_rows(out)]
    assert {
        "by hand, validate off",
        "h2k migrate, validate off",
        "by hand, validate on",
        "h2k migrate, validate on",
        "in place: qemu-img convert json: raw offset/size",
        "unpack: tar -xf, then qemu-img convert",
        "h2k convert job of the member (h2kctl submit)",
    } <= set(names)
    assert "h2k migration bench-vm-v0-1: COMPLETED" in out
    assert "h2k migration bench-vm-v1-1: COMPLETED" in out
    assert "every output equals its source (qemu-img compare)" in out
    assert "h2k timeline, validate on (medians, s from launch)" in out


def test_digest_prints_each_way_against_conversion_alone(capsys):
    digest.main(["--quick"])
    rows = table_rows(capsys.readouterr().out)
    for way in ("convert", "convert+sha256", "checksum+convert", "sha256 alone"):
        assert any(r.startswith(f"| {way} ") for r in rows), rows


@pytest.mark.skipif(missing_for_privileged() is not None, reason=str(missing_for_privileged()))
def test_repair_overlay_prints_both_pipelines(capsys, tmp_path):
    sizes = ["--root-mib", "64", "--data-mib", "4", "--garbage-mib", "16", "--rounds", "1"]
    repair_overlay.main([*sizes, "--workdir", str(tmp_path)])
    rows = table_rows(capsys.readouterr().out)
    assert sum(r.startswith("| overlay (trim, one copy)") for r in rows) == 2
    assert sum(r.startswith("| convert then repair (before)") for r in rows) == 2


def test_wave_every_job_completes_and_every_watcher_sees_every_event(capsys):
    # TLS on: the fake agents' own certificates, mutual TLS both ways, as in production.
    assert wave.main(["--quick", "--tls", "on"]) == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in r.split("|")] for r in table_rows(out)]
    summary = next(r for r in rows if r[1] == "on")
    assert summary[11] == "12/12" and summary[12] == "yes"  # every watch exact; all correct
    assert "states {'COMPLETED': 60}; events stored 360 (expected 360)" in out
    assert "started twice 0, over slots 0" in out
    assert "no event lost, repeated or out of order; exactly-once start: PASS" in out


def test_cli_start_prints_every_way(capsys):
    cli_start.main(["--rounds", "1"])
    names = [r.split("|")[1].strip() for r in table_rows(capsys.readouterr().out)[1:]]
    assert names == [
        "python -c pass",
        "h2kctl --help",
        "h2kctl submit --help",
        "h2kctl submit JOB, to validation",
    ]


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_last_mile_prints_every_way_and_both_bars(capsys):
    last_mile.main(["--quick", "--size-gib", "0.0625"])
    out = capsys.readouterr().out
    names = [r.split("|")[1].strip() for r in table_rows(out)]
    assert {"h2k", "hand agent argv +wb", "hand agent argv +wb +sha256", "cp --sparse"} <= set(
        names
    )
    assert "every output equals the source (qemu-img compare)" in out
    assert "bar: h2k <= 1.1 x best by hand" in out
    assert "bar: h2k <= 1.25 x cp --sparse + fsync" in out
    assert "qemu-img measure" in out
