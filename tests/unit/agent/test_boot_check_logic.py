"""The boot check's pure parts: the verdict rule (both ways), the QEMU machine, the parameters,
the firmware a disk needs, and the UEFI fallback fix on a directory tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.boot.machine import BootDisk, Machine, qemu_argv
from agent.boot.repair_step import firmware_of
from agent.boot.verdict import (
    BOOTED_WRITES,
    IDLE_AFTER_KERNEL_SECONDS,
    BootWatch,
    Observation,
    Stage,
    screen_text,
)
from agent.disk.attach import AttachedPartition
from agent.errors import InvalidSpec
from agent.repair.actions import plan_repair
from agent.repair.changes import ChangeSet
from agent.repair.detect import GuestInfo
from agent.repair.devices import DeviceMap, DiskNaming
from agent.repair.fixes.base import FixContext, OutcomeStatus
from agent.repair.fixes.uefi_fallback import fix_uefi_fallback
from agent.repair.guestfs import GuestRoot
from tests.support.builders import job_spec


def _watch(firmware: str = "bios") -> BootWatch:
    return BootWatch(firmware, "tcg")


def test_many_writes_mean_userspace_is_up() -> None:
    verdict = _watch().observe(Observation(31.5, reads=900, writes=BOOTED_WRITES))
    assert verdict is not None and verdict.booted
    assert verdict.describe()["seconds_to_userspace"] == 31.5


def test_grub_writing_its_environment_block_is_not_a_boot() -> None:
    assert _watch().observe(Observation(5.0, reads=400, writes=2)) is None


@pytest.mark.parametrize(
    ("observation", "stage"),
    [
        (Observation(3, firmware_log="Booting from Hard Disk...\nNo bootable device.\n"),
         Stage.NO_BOOTLOADER),
        (Observation(9, serial="\x1b[0mUEFI Interactive Shell v2.2\r\nShell> "),
         Stage.NO_BOOTLOADER),
        (Observation(40, screen="Loading Linux 6.1 ...\nKernel panic - not syncing: VFS: Unable"),
         Stage.KERNEL_PANIC),
        (Observation(60, screen="Gave up waiting for root file system device.\n(initramfs)"),
         Stage.ROOT_NOT_FOUND),
    ],
)  # fmt: skip
def test_what_the_guest_shows_decides_the_stage(observation: Observation, stage: Stage) -> None:
    verdict = _watch().observe(observation)
    assert verdict is not None and not verdict.booted
    assert verdict.stage is stage
    assert verdict.describe()["stage"] == stage.value
    assert verdict.console_tail  # what the guest showed travels with the verdict


def test_disks_idle_after_the_kernel_was_loaded_is_an_inferred_root_not_found() -> None:
    watch = _watch("uefi")
    idle = IDLE_AFTER_KERNEL_SECONDS["tcg"]
    loading = "Loading Linux 6.1.0 ...\r\nLoading initial ramdisk ...\r\n"
    assert watch.observe(Observation(10, serial=loading, reads=700)) is None
    assert watch.observe(Observation(10 + idle - 1, serial=loading, reads=700)) is None
    verdict = watch.observe(Observation(10 + idle, serial=loading, reads=700))
    assert verdict is not None and verdict.stage is Stage.ROOT_NOT_FOUND
    assert verdict.detail.startswith("inferred")


def test_idle_disks_without_a_kernel_are_not_a_verdict_until_the_time_limit() -> None:
    watch = _watch()
    seabios = "Booting from Hard Disk..."
    for second in (1, 50, 100):
        assert watch.observe(Observation(second, firmware_log=seabios, reads=1)) is None
    verdict = watch.at_time_limit(Observation(120, firmware_log=seabios, reads=1), 120)
    assert verdict.stage is Stage.HUNG and "120 s" in verdict.detail


def test_reads_after_the_kernel_keep_the_guest_alive() -> None:
    watch = _watch("uefi")
    loading = "Loading Linux 6.1.0 ..."
    for second in range(0, 600, 10):
        assert watch.observe(Observation(second, serial=loading, reads=second * 10)) is None


def test_screen_text_decodes_vga_character_cells() -> None:
    cells = b"".join(bytes([ord(c), 0x07]) for c in "(initramfs) ".ljust(80)) + b"\0\x07" * 80
    assert screen_text(cells) == "(initramfs)"


def test_the_machine_opens_only_the_overlays_never_the_output(tmp_path: Path) -> None:
    machine = Machine(tmp_path, "uefi", "tcg", [BootDisk(tmp_path / "overlay0.qcow2")])
    argv = qemu_argv(machine)
    drives = [a for a in argv if a.startswith("file=")]
    assert drives == [f"file={tmp_path}/overlay0.qcow2,format=qcow2,if=none,id=disk0,cache=unsafe"]
    assert "virtio-blk-pci,drive=disk0,bootindex=1" in argv
    assert "virtio-net-pci,netdev=net0,romfile=" in argv
    assert any(a.startswith("if=pflash") and str(tmp_path / "efivars.fd") in a for a in argv)
    assert any("readonly=on" in a and "OVMF_CODE" in a for a in argv)


def test_firmware_comes_from_the_boot_disks_partitions() -> None:
    esp = {"type": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}
    assert firmware_of([{"partitions": [esp, {"type": "0fc63daf"}]}]) == "uefi"
    assert firmware_of([{"partitions": [{"type": "83"}]}, {"partitions": [esp]}]) == "bios"
    assert firmware_of([]) == "bios"


def _repair_spec(**parameters: object):  # type: ignore[no-untyped-def]
    return job_spec(operation="offline_fix", parameters=parameters)


def test_boot_check_parameters_are_validated() -> None:
    plan = plan_repair(_repair_spec(boot_check=True, boot_check_seconds=120.0))
    assert plan.boot_check and plan.boot_check_seconds == 120
    assert not plan_repair(_repair_spec()).boot_check
    for parameters, message in [
        ({"boot_check": "yes"}, "parameters.boot_check: must be true or false"),
        ({"boot_check": True, "dry_run": True}, "parameters.boot_check: a dry run"),
        ({"boot_check_seconds": 5}, "parameters.boot_check_seconds: must be a whole number"),
        ({"boot_check_seconds": True}, "parameters.boot_check_seconds: must be a whole number"),
        ({"boot_check_seconds": 12.5}, "parameters.boot_check_seconds: must be a whole number"),
    ]:
        with pytest.raises(InvalidSpec, match=message.replace(".", r"\.")):
            plan_repair(_repair_spec(**parameters))


def _uefi_guest(tmp_path: Path, files: dict[str, bytes], *, dry_run: bool = False) -> FixContext:
    for path, data in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    root = GuestRoot(tmp_path)
    partition = AttachedPartition(3, 0, 1, "/dev/loop3", fstype="ext4", uuid="u")
    naming = DiskNaming("sd")
    guest = GuestInfo("debian", "Debian", "12", "debian", partition, "/dev/sda3", naming, [])
    return FixContext(root, guest, DeviceMap([partition], naming), ChangeSet(root, dry_run=dry_run),
                      {})  # fmt: skip


def test_uefi_fallback_copies_grub_as_debian_would(tmp_path: Path) -> None:
    vendor = "/boot/efi/EFI/debian"
    ctx = _uefi_guest(tmp_path, {f"{vendor}/grubx64.efi": b"MZgrub",
                                 f"{vendor}/grub.cfg": b"search.fs_uuid x root\n"})  # fmt: skip
    outcome = fix_uefi_fallback(ctx)
    assert outcome.status is OutcomeStatus.APPLIED
    assert (tmp_path / "boot/efi/EFI/BOOT/BOOTX64.EFI").read_bytes() == b"MZgrub"
    assert (tmp_path / "boot/efi/EFI/BOOT/grub.cfg").read_text() == "search.fs_uuid x root\n"
    recorded = {(c.path, c.detail) for c in ctx.changes.for_action("uefi_fallback")}
    assert recorded == {
        ("/boot/efi/EFI/BOOT/BOOTX64.EFI", "copy of /boot/efi/EFI/debian/grubx64.efi"),
        ("/boot/efi/EFI/BOOT/grub.cfg", "copy of /boot/efi/EFI/debian/grub.cfg"),
    }
    assert fix_uefi_fallback(_uefi_guest(tmp_path, {})).status is OutcomeStatus.SKIPPED


def test_uefi_fallback_puts_shim_first_when_the_guest_boots_through_shim(tmp_path: Path) -> None:
    ctx = _uefi_guest(tmp_path, {"/boot/efi/EFI/debian/shimx64.efi": b"shim",
                                 "/boot/efi/EFI/debian/grubx64.efi": b"grub",
                                 "/boot/efi/EFI/debian/mmx64.efi": b"mm"})  # fmt: skip
    fix_uefi_fallback(ctx)
    boot = tmp_path / "boot/efi/EFI/BOOT"
    assert {p.name: p.read_bytes() for p in boot.iterdir()} == {
        "BOOTX64.EFI": b"shim", "grubx64.efi": b"grub", "mmx64.efi": b"mm"}  # fmt: skip


def test_uefi_fallback_dry_run_and_bios_guests_change_nothing(tmp_path: Path) -> None:
    ctx = _uefi_guest(tmp_path, {"/boot/efi/EFI/debian/grubx64.efi": b"g"}, dry_run=True)
    assert fix_uefi_fallback(ctx).status is OutcomeStatus.WOULD_APPLY
    assert not (tmp_path / "boot/efi/EFI/BOOT").exists()
    bios = _uefi_guest(tmp_path / "bios", {"/boot/grub/grub.cfg": b"x"})
    assert fix_uefi_fallback(bios).status is OutcomeStatus.SKIPPED
