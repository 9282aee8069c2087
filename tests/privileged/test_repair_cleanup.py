"""Nothing stays attached when a repair is cancelled half-way or the agent is killed.

The guest's root file system has 4 million inodes and no uninit_bg, so its e2fsck takes
seconds: long enough to cancel it, or kill the agent, while the image is exported over FUSE
and its partitions are on loop devices.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from devsupport.cluster import Cluster, wait_for
from tests.support.guests import GuestDisk, build_debian_like
from tests.support.repair_checks import (
    is_clean,
    leftovers,
    loops_under,
    sha256,
    storage_daemons_under,
)
from tests.support.repair_jobs import job, repair_spec, submit


@pytest.fixture(scope="module")
def slow_guest(repair_cluster: Cluster) -> GuestDisk:
    directory = repair_cluster.input_dir / "slow"
    directory.mkdir()
    return build_debian_like(directory, "slow-fsck", slow_fsck=True)


def _overlays(cluster: Cluster) -> list[Path]:
    """The repair overlays in the agent's scratch space."""
    return sorted((cluster.workdir / "node-1" / "tmp").glob("*/overlay.qcow2"))


def _wait_for_fsck(cluster: Cluster, job_id: str) -> None:
    """Follow the job's events until its fsck phase has started (the disk is attached)."""
    with cluster.client() as client:
        for event in client.watch(job_id):
            assert event.phase not in ("mount", "done"), "fsck finished before the test acted"
            if event.phase == "fsck":
                return
    raise AssertionError("the job ended before its fsck phase")


def test_cancel_during_fsck_releases_everything(
    repair_cluster: Cluster, slow_guest: GuestDisk, outdir: Path
) -> None:
    before = sha256(slow_guest.path)
    doc = repair_spec("fs_repair", slow_guest.path, outdir)
    job_id = submit(repair_cluster, doc)
    _wait_for_fsck(repair_cluster, job_id)
    assert loops_under(repair_cluster.workdir), "the disk should be attached during fsck"
    assert storage_daemons_under(repair_cluster.workdir)
    assert _overlays(repair_cluster), "the repair should write into an overlay"
    with repair_cluster.client() as client:
        client.cancel(job_id)

    def cancelled() -> dict | None:
        current = job(repair_cluster, job_id)
        assert current["state"] not in ("COMPLETED", "FAILED"), current["result"]
        return current if current["state"] == "CANCELLED" else None

    result = wait_for(cancelled, timeout=30, what="CANCELLED")
    assert result["result"]["error"]["code"] == "CANCELLED"
    assert result["result"]["error"]["phase"] == "fsck"
    # The terminal event is sent after the context managers have released everything.
    assert is_clean(repair_cluster.workdir), leftovers(repair_cluster.workdir)
    assert list(outdir.iterdir()) == []  # no image, no temporary file, no report
    assert _overlays(repair_cluster) == []
    assert sha256(slow_guest.path) == before


def test_agent_killed_mid_repair_releases_leftovers_on_restart(
    repair_cluster: Cluster, slow_guest: GuestDisk, outdir: Path
) -> None:
    before = sha256(slow_guest.path)
    doc = repair_spec("fs_repair", slow_guest.path, outdir)
    job_id = submit(repair_cluster, doc)
    _wait_for_fsck(repair_cluster, job_id)
    repair_cluster.agents["node-1"].stop(sig=signal.SIGKILL)
    left = leftovers(repair_cluster.workdir)
    assert left["loops"] and left["storage_daemons"], left
    assert _overlays(repair_cluster), "the killed agent's overlay is still there"
    journal = repair_cluster.workdir / "node-1" / "attachments" / f"{job_id}.json"
    assert journal.exists()

    repair_cluster.start_agent("node-1")
    wait_for(
        lambda: is_clean(repair_cluster.workdir),
        timeout=30,
        what=f"leftovers released: {leftovers(repair_cluster.workdir)}",
    )
    assert not journal.exists()
    assert _overlays(repair_cluster) == [], "recovery removes a crashed job's overlay"
    assert "released leftover attachment" in repair_cluster.agents["node-1"].log()
    assert sha256(slow_guest.path) == before
