"""A source that stops answering (a hung NFS read, played by a FUSE export whose daemon is
stopped) is detected within the agent's --stall-seconds: qemu-img's process group is killed
and the job fails as retryable (STALLED), with nothing left at the output."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devsupport.cluster import wait_for
from tests.support.faults import FaultCluster, temporary_files

STALL_SECONDS = 3


@contextlib.contextmanager
def fuse_exported(source: Path, mountpoint: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``source`` (raw) readable at the regular file ``mountpoint``, served by a
    qemu-storage-daemon of the test's own; the daemon is stopped and unmounted on the way out."""
    mountpoint.touch()
    daemon = subprocess.Popen(
        [
            "qemu-storage-daemon",
            "--blockdev",
            f"driver=file,node-name=file0,filename={source},read-only=on",
            "--export",
            f"type=fuse,id=exp0,node-name=file0,mountpoint={mountpoint},writable=off",
        ],
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: os.stat(mountpoint).st_size == source.stat().st_size or None,
            timeout=30,
            what="the FUSE export",
        )
        yield daemon
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGCONT)
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(10)
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def _qemu_imgs_of(cluster: FaultCluster, agent: str) -> list[psutil.Process]:
    popen = cluster.agents[agent].popen
    assert popen is not None
    children = psutil.Process(popen.pid).children(recursive=True)
    return [p for p in children if p.name() == "qemu-img"]


PF_EXITING = 0x4


def _killed(process: psutil.Process) -> bool:
    """Exited (a zombie), exiting (its last close waits for the share), or SIGKILL is pending
    on it: it cannot convert on."""
    if process.status() == psutil.STATUS_ZOMBIE:
        return True
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    if int(stat.rsplit(") ", 1)[1].split()[6]) & PF_EXITING:
        return True
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
    )
    pending = int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)
    return bool(pending & (1 << (signal.SIGKILL - 1)))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FaultCluster]:
    if shutil.which("qemu-storage-daemon") is None:
        pytest.fail("qemu-storage-daemon is not installed: run `make setup`")
    cluster = FaultCluster(tmp_path / "cluster")
    try:
        cluster.start_controlplane()
        cluster.start_agent("node-1", "--stall-seconds", str(STALL_SECONDS))
        yield cluster
    finally:
        cluster.stop()


def test_a_source_that_stops_answering_fails_as_stalled_and_kills_qemu_img(
    cluster: FaultCluster, slow_source: Path
) -> None:
    with fuse_exported(slow_source, cluster.input_dir / "hung.img") as daemon:
        doc = cluster.convert_spec("stalled-1", source="hung.img")
        cluster.submit(doc)
        cluster.wait_progress("stalled-1", 5, timeout=120)
        os.killpg(daemon.pid, signal.SIGSTOP)  # the share stops answering
        job = cluster.wait_state("stalled-1", "FAILED", timeout=60)
        error = job.result.error
        assert error.code == "STALLED", error.message
        assert f"no progress for {STALL_SECONDS} s" in error.message
        assert "killed" in error.message
        # Killed: what is left waits in the kernel for the share (a zombie whose last thread
        # is in the FUSE flush); once the share answers again it is gone, not converting on.
        left = _qemu_imgs_of(cluster, "node-1")
        assert all(_killed(p) for p in left), left
        os.killpg(daemon.pid, signal.SIGCONT)
        wait_for(
            lambda: not _qemu_imgs_of(cluster, "node-1"),
            timeout=30,
            what="the killed qemu-img reaped",
        )
        assert not (cluster.output_dir / "hung.qcow2").exists()
        assert temporary_files(cluster.output_dir) == []
        # The agent is healthy: it takes the next job.
        cluster.submit(cluster.convert_spec("stalled-after", source="hung.img"))
        cluster.wait_state("stalled-after", "COMPLETED", timeout=180)
