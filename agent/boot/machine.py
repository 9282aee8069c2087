"""The QEMU machine the boot check starts: what the target KVM VM will have, and nothing more.

q35, virtio disks (the first bootable) and a virtio NIC on an isolated user network, SeaBIOS or
OVMF with a fresh copy of its variables (the VMware NVRAM does not travel with the disk), VGA
for the text screen, the serial port and the firmware's debug port to files, a QMP socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from agent import proc

QEMU = "qemu-system-x86_64"
GUEST_MEMORY_MIB = 1024
OVMF_PAIRS = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
)
ACCEL_ENV = "H2K_BOOT_ACCEL"  # "kvm" or "tcg": skip the probe
KVM_PROBE_SECONDS = 10.0
# A boot sector that writes 1 to QEMU's isa-debug-exit port: QEMU exits with status 3.
_PROBE_SECTOR = bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD]).ljust(510, b"\0") + b"\x55\xaa"
_kvm_usable: bool | None = None
log = logging.getLogger(__name__)


class FirmwareMissing(Exception):
    """The firmware the guest needs is not installed on this node."""


@dataclass(frozen=True)
class BootDisk:
    """One guest disk as QEMU opens it: the overlay (qcow2) over the output."""

    overlay: Path


@dataclass(frozen=True)
class Machine:
    """Everything one boot's QEMU needs; the files all live in ``workdir``."""

    workdir: Path
    firmware: str  # "bios" or "uefi"
    accelerator: str  # "kvm" or "tcg"
    disks: list[BootDisk]

    @property
    def qmp_socket(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def firmware_log(self) -> Path:
        return self.workdir / "firmware.log"

    @property
    def vars_copy(self) -> Path:
        return self.workdir / "efivars.fd"

    @property
    def screen_dump(self) -> Path:
        return self.workdir / "screen.bin"


def ovmf_files() -> tuple[Path, Path]:
    """The OVMF code and variables template.

    Raises:
        FirmwareMissing: no OVMF build is installed (Debian's ``ovmf`` package).
    """
    for code, template in OVMF_PAIRS:
        if os.path.exists(code) and os.path.exists(template):
            return Path(code), Path(template)
    raise FirmwareMissing("OVMF is not installed on this node (Debian package ovmf)")


def prepare_firmware(machine: Machine) -> None:
    """A fresh copy of OVMF's variables: what a new KVM VM starts with."""
    if machine.firmware == "uefi":
        _, template = ovmf_files()
        shutil.copyfile(template, machine.vars_copy)


def qemu_argv(machine: Machine) -> list[str]:
    accel = "kvm" if machine.accelerator == "kvm" else "tcg,tb-size=256"
    argv = [
        QEMU, "-nodefaults", "-no-user-config", "-name", "h2k-boot-check",
        "-machine", "q35", "-accel", accel,
        "-cpu", "host" if machine.accelerator == "kvm" else "max",
        "-smp", "1", "-m", str(GUEST_MEMORY_MIB),
        "-display", "none", "-vga", "std", "-no-reboot",
        "-qmp", f"unix:{machine.qmp_socket},server=on,wait=off",
        "-chardev", f"file,id=serial0,path={machine.serial_log}",
        "-serial", "chardev:serial0",
        "-chardev", f"file,id=fwlog,path={machine.firmware_log}",
        "-device", "isa-debugcon,iobase=0x402,chardev=fwlog",
        # Isolated: the guest reaches nothing (restrict=on), and no option ROM tries to
        # network-boot when the disk does not boot.
        "-netdev", "user,id=net0,restrict=on",
        "-device", "virtio-net-pci,netdev=net0,romfile=",
    ]  # fmt: skip
    if machine.firmware == "uefi":
        code, _ = ovmf_files()
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={machine.vars_copy}",
        ]  # fmt: skip
    for index, disk in enumerate(machine.disks):
        argv += [
            "-drive", f"file={disk.overlay},format=qcow2,if=none,id=disk{index},cache=unsafe",
            "-device", f"virtio-blk-pci,drive=disk{index}"
            + (",bootindex=1" if index == 0 else ""),
        ]  # fmt: skip
    return argv


async def _kvm_boots(workdir: Path) -> bool:
    """Whether a guest really runs under KVM here: a one-sector guest must exit QEMU by itself.

    Opening /dev/kvm is not enough: on some nodes (nested, restricted) guests hang under KVM.
    """
    sector = workdir / "kvm-probe.img"
    sector.write_bytes(_PROBE_SECTOR)
    # The boot's own machine, CPU and memory: some hosts fail only with -cpu host on q35.
    argv = [
        QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-machine", "q35",
        "-accel", "kvm", "-cpu", "host", "-smp", "1", "-m", str(GUEST_MEMORY_MIB),
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-drive", f"file={sector},format=raw,if=none,id=probe",
        "-device", "virtio-blk-pci,drive=probe,bootindex=1",
    ]  # fmt: skip
    try:
        await proc.run(argv, timeout=KVM_PROBE_SECONDS, grace_seconds=1.0)
    except proc.CommandFailed as exc:
        return exc.exit_code == 3
    except proc.CommandTimeout:
        return False
    finally:
        sector.unlink(missing_ok=True)
    return False


async def choose_accelerator(workdir: Path) -> str:
    """``kvm`` when /dev/kvm is usable (probed once per agent process), else ``tcg``."""
    global _kvm_usable
    forced = os.environ.get(ACCEL_ENV)
    if forced in ("kvm", "tcg"):
        return forced
    if _kvm_usable is None:
        usable = await asyncio.to_thread(os.access, "/dev/kvm", os.R_OK | os.W_OK)
        _kvm_usable = usable and await _kvm_boots(workdir)
        log.info("boot check accelerator probe kvm_usable=%s", _kvm_usable)
    return "kvm" if _kvm_usable else "tcg"
