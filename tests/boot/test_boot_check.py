"""The boot check on real Debian 12 guests laid out as VMware leaves them.

Unrepaired, each fails on virtio at the stage it really stops at; repaired by ``offline_fix``
with ``boot_check: true`` each boots (the job says so in its report and result). The check never
writes the disks it boots, a cancelled check kills QEMU and leaves nothing, a guest that hangs
ends at the time limit, and a repair whose guest does not boot fails without publishing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.boot.check import GuestDisk, boot_check
from agent.boot.verdict import Stage
from devsupport.cluster import Cluster
from protocol.migration_jobs import staged_name
from tests.support.debian_guests import DebianGuest, copy_guest
from tests.support.repair_checks import is_clean, leftovers, sha256
from tests.support.repair_jobs import action, repair_spec, report_of, run_job

# The first run on a machine builds the guests (debootstrap: a few minutes).
pytestmark = pytest.mark.timeout(1500)
BOOT_SECONDS = 240
JOB_TIMEOUT = 900


def _qemu_processes(marker: Path) -> list[int]:
    """QEMU processes whose command line names ``marker`` (a directory of this test's)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmdline and str(marker) in cmdline:
            found.append(int(pid))
    return found


def _boot(guest: DebianGuest, workdir: Path, limit: float = BOOT_SECONDS):  # type: ignore[no-untyped-def]
    disks = [GuestDisk(d, d.suffix.lstrip(".")) for d in guest.disks]
    return asyncio.run(boot_check(disks, guest.firmware, workdir, time_limit=limit))


@pytest.mark.parametrize(
    ("layout", "stage"),
    [("bios", Stage.ROOT_NOT_FOUND), ("uefi", Stage.NO_BOOTLOADER),
     ("two_disks", Stage.ROOT_NOT_FOUND)],
)  # fmt: skip
def test_an_unrepaired_vmware_guest_does_not_boot_on_virtio(
    tmp_path: Path, layout: str, stage: Stage
) -> None:
    guest = copy_guest(layout, tmp_path / "disks")
    before = [sha256(d) for d in guest.disks]
    result = _boot(guest, tmp_path / "check")
    assert result.result == "did_not_boot", result.describe()
    assert result.stage is stage, result.describe()
    if stage is Stage.ROOT_NOT_FOUND:
        # What the VMware initramfs shows on the screen when it has no virtio driver.
        assert "/dev/sda1 does not exist" in result.console_tail
    else:
        assert "UEFI Interactive Shell" in result.console_tail  # fresh OVMF variables
    assert [sha256(d) for d in guest.disks] == before
    assert not (tmp_path / "check").exists()


def _completed(result: dict[str, Any]) -> None:
    assert result["state"] == "COMPLETED", result["result"]


def _assert_node_clean(cluster: Cluster) -> None:
    assert is_clean(cluster.workdir), leftovers(cluster.workdir)
    assert not list((cluster.workdir / "node-1").rglob("overlay*.qcow2"))
    assert _qemu_processes(cluster.workdir) == []


@pytest.mark.parametrize("layout", ["bios", "uefi"])
def test_offline_fix_with_boot_check_boots_the_repaired_guest(
    boot_cluster: Cluster, outdir: Path, tmp_path: Path, layout: str
) -> None:
    guest = copy_guest(layout, boot_cluster.input_dir / f"fix-{layout}")
    source_sha = sha256(guest.disks[0])
    doc = repair_spec("offline_fix", guest.disks[0], outdir, boot_check=True,
                      boot_check_seconds=BOOT_SECONDS)  # fmt: skip
    result = run_job(boot_cluster, doc, timeout=JOB_TIMEOUT)
    _completed(result)
    report = report_of(outdir, doc["job_id"])
    check = report["boot_check"]
    assert check["result"] == "booted", check
    assert check["firmware"] == guest.firmware
    assert check["seconds_to_userspace"] > 0
    assert result["result"]["details"]["boot_check"]["result"] == "booted"  # h2kctl get
    assert action(report, "boot_check")["status"] == "applied"
    fallback = action(report, "uefi_fallback")
    if layout == "uefi":
        assert fallback["status"] == "applied"
        assert "/boot/efi/EFI/BOOT/BOOTX64.EFI" in fallback["files"]
    else:
        assert fallback["status"] == "skipped"
    assert sha256(guest.disks[0]) == source_sha
    _assert_node_clean(boot_cluster)
    if layout == "bios":
        # The check never writes what it boots: a booted guest writes, its overlay takes it.
        output = outdir / f"{guest.disks[0].stem}.qcow2"
        before = sha256(output)
        again = _boot(DebianGuest(layout, [output], "bios", "", ""), tmp_path / "again")
        assert again.booted, again.describe()
        assert again.evidence["disk_writes"] > 0
        assert sha256(output) == before


def test_a_two_disk_vm_repaired_as_a_migration_boots(boot_cluster: Cluster, outdir: Path) -> None:
    guest = copy_guest("two_disks", boot_cluster.input_dir / "vm")
    data = outdir / staged_name("mig-1", "vm-disk1.qcow2")
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(guest.disks[1]),
                    str(data)], check=True, timeout=300)  # fmt: skip
    migration = {
        "migration_id": "mig-1",
        "disk_id": "disk-0",
        "output_name": f"{guest.disks[0].stem}.qcow2",
        "attach_outputs": [{"disk_id": "disk-1", "path": str(data), "format": "qcow2"}],
    }
    doc = repair_spec("offline_fix", guest.disks[0], outdir, migration=migration,
                      boot_check=True, boot_check_seconds=BOOT_SECONDS)  # fmt: skip
    result = run_job(boot_cluster, doc, timeout=JOB_TIMEOUT)
    _completed(result)
    report = result["result"]["details"]  # a migration job writes no report file
    assert report["boot_check"]["result"] == "booted", report["boot_check"]
    fstab = next(f for f in report["files"] if f["path"] == "/etc/fstab")
    assert "-/dev/sdb1 /var" in fstab["diff"]
    _assert_node_clean(boot_cluster)


def test_a_repair_whose_guest_does_not_boot_fails_and_publishes_nothing(
    boot_cluster: Cluster, outdir: Path
) -> None:
    guest = copy_guest("bios", boot_cluster.input_dir / "no-virtio")
    # Without the virtio drivers the repaired guest still cannot find its root on virtio.
    doc = repair_spec("offline_fix", guest.disks[0], outdir, boot_check=True,
                      boot_check_seconds=BOOT_SECONDS, virtio_drivers=False)  # fmt: skip
    result = run_job(boot_cluster, doc, timeout=JOB_TIMEOUT)
    assert result["state"] == "FAILED"
    error = result["result"]["error"]
    assert "boot_check (did not boot: root_not_found" in error["message"]
    assert sorted(p.name for p in outdir.iterdir()) == [f"{doc['job_id']}_report.json"]
    report = report_of(outdir, doc["job_id"])
    assert report["boot_check"]["stage"] == "root_not_found"
    # The check stops at the first sign (the initramfs giving up), which may come before
    # its shell prompt is printed: the message is what the user reads either way.
    assert "Gave up waiting for root file system device" in report["boot_check"]["console_tail"]
    _assert_node_clean(boot_cluster)


def test_cancelling_the_check_kills_qemu_and_leaves_nothing(tmp_path: Path) -> None:
    guest = copy_guest("bios", tmp_path / "disks")
    workdir = tmp_path / "check"

    async def cancel_while_booting() -> None:
        disks = [GuestDisk(guest.disks[0], "vmdk")]
        task = asyncio.create_task(boot_check(disks, "bios", workdir, time_limit=BOOT_SECONDS))
        deadline = asyncio.get_running_loop().time() + 60
        while not _qemu_processes(workdir):
            assert not task.done() and asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_booting())
    assert _qemu_processes(workdir) == []
    assert not workdir.exists()  # overlay, firmware copies, sockets: all gone


def test_a_guest_that_hangs_ends_at_the_time_limit(tmp_path: Path) -> None:
    # A boot sector that spins forever: the firmware boots it, then nothing ever happens.
    disk = tmp_path / "spin.raw"
    disk.write_bytes(b"\xeb\xfe".ljust(510, b"\0") + b"\x55\xaa" + bytes(1024 * 1024))
    result = _boot(DebianGuest("spin", [disk], "bios", "", ""), tmp_path / "check", limit=12)
    assert result.stage is Stage.HUNG, result.describe()
    assert "time limit of 12 s" in result.detail
    assert "Booting from Hard Disk" in result.console_tail
    assert not (tmp_path / "check").exists()
