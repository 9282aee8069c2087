"""uefi_fallback: the guest boots on fresh UEFI firmware (``\\EFI\\BOOT\\BOOTX64.EFI``).

A VMware UEFI guest's boot entry lives in the VM's NVRAM, which does not travel with the disk:
on a new KVM VM with fresh OVMF variables, a bootloader that only sits at ``\\EFI\\<vendor>\\``
is never started and the firmware drops to its shell. The firmware's removable-media path is
tried with no boot entry at all, so the vendor's loader is copied there, as Debian's
``grub-install --force-extra-removable`` does: with shim, ``shimx64.efi`` becomes
``BOOTX64.EFI`` and GRUB (and MokManager) sit next to it; without, ``grubx64.efi`` becomes
``BOOTX64.EFI``. The vendor's ``grub.cfg`` (how a signed GRUB finds ``/boot``) is copied along.
The vendor's files are not changed.
"""

from __future__ import annotations

from pathlib import Path

from agent import proc
from agent.disk.attach import AttachedPartition
from agent.repair.fixes.base import FixContext, Outcome, OutcomeStatus, changed_outcome

ACTION = "uefi_fallback"
ESP_EFI = "/boot/efi/EFI"
FALLBACK_DIR = f"{ESP_EFI}/BOOT"
FALLBACK = f"{FALLBACK_DIR}/BOOTX64.EFI"
# Vendors in the order a distribution's own directory is preferred over another's leftovers.
PREFERRED_VENDORS = ("debian", "ubuntu", "redhat", "centos", "rocky", "almalinux", "fedora",
                     "opensuse", "sles")  # fmt: skip


def _entries(ctx: FixContext, directory: str) -> dict[str, str]:
    """The entries of an ESP directory by lower-case name (FAT ignores case)."""
    return {path.rsplit("/", 1)[1].lower(): path for path in ctx.root.glob(directory, "*")}


def _vendor_loader(ctx: FixContext) -> tuple[str, dict[str, str]] | None:
    """The vendor directory holding an x86-64 loader (shim or GRUB), and its files."""
    vendors = {name: path for name, path in _entries(ctx, ESP_EFI).items() if name != "boot"}
    order = [v for v in PREFERRED_VENDORS if v in vendors]
    order += sorted(v for v in vendors if v not in order)
    for vendor in order:
        files = _entries(ctx, vendors[vendor])
        if "shimx64.efi" in files or "grubx64.efi" in files:
            return vendors[vendor], files
    return None


def _copies(files: dict[str, str]) -> dict[str, str]:
    """Which of the vendor's files go to \\EFI\\BOOT\\, under which name."""
    if "shimx64.efi" in files:
        copies = {"shimx64.efi": "BOOTX64.EFI", "grubx64.efi": "grubx64.efi",
                  "mmx64.efi": "mmx64.efi"}  # fmt: skip
    else:
        copies = {"grubx64.efi": "BOOTX64.EFI"}
    copies["grub.cfg"] = "grub.cfg"
    return {name: target for name, target in copies.items() if name in files}


def fix_uefi_fallback(ctx: FixContext) -> Outcome:
    """Install the removable-media fallback loader from the vendor's directory on the ESP."""
    if not ctx.root.is_dir(ESP_EFI):
        return Outcome(ACTION, OutcomeStatus.SKIPPED, "no EFI system partition at /boot/efi")
    if "bootx64.efi" in _entries(ctx, FALLBACK_DIR):
        return Outcome(ACTION, OutcomeStatus.SKIPPED, "\\EFI\\BOOT\\BOOTX64.EFI already exists")
    found = _vendor_loader(ctx)
    if found is None:
        return Outcome(
            ACTION, OutcomeStatus.SKIPPED, "no x86-64 loader (shimx64.efi, grubx64.efi) on the ESP"
        )
    vendor, files = found
    for name, target in _copies(files).items():
        ctx.changes.copy_file(ACTION, files[name], f"{FALLBACK_DIR}/{target}")
    notes = [
        f"fallback loader copied from {vendor}; the guest's grub-install refreshes it only "
        "when told to (Debian: grub2/force_efi_extra_removable)"
    ]
    return changed_outcome(ctx, ACTION, "nothing to copy", notes)


# The ESP is not mounted when the agent's kernel has no FAT driver (some container hosts): the
# same copies are then made on its block device with mtools, which needs no kernel support.
MTOOLS_TIMEOUT = 60.0
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


async def _mdir(device: str, directory: str) -> dict[str, str]:
    """Entries of an ESP directory by lower-case name -> their ``::/`` path ({}: absent)."""
    argv = ["mdir", "-b", "-i", device, f"::{directory}"]
    try:
        result = await proc.run(argv, timeout=MTOOLS_TIMEOUT, capture_stdout=True,
                                env=MTOOLS_ENV)  # fmt: skip
    except proc.CommandFailed:
        return {}
    paths = [line.strip().rstrip("/") for line in result.stdout.splitlines() if line.strip()]
    return {p.rsplit("/", 1)[1].lower(): p for p in paths}


async def _mcopy(device: str, source: str, target: str, scratch: Path) -> None:
    held = scratch / "h2k-esp-copy"
    try:
        await proc.run(["mcopy", "-o", "-i", device, source, str(held)],
                       timeout=MTOOLS_TIMEOUT, env=MTOOLS_ENV)  # fmt: skip
        await proc.run(["mcopy", "-o", "-i", device, str(held), target],
                       timeout=MTOOLS_TIMEOUT, env=MTOOLS_ENV)  # fmt: skip
    finally:
        held.unlink(missing_ok=True)


async def fix_uefi_fallback_unmounted(
    ctx: FixContext, esp: AttachedPartition, scratch: Path
) -> Outcome:
    """:func:`fix_uefi_fallback` on an ESP that is not mounted: on its device, with mtools."""
    if proc.which("mcopy") is None:
        why = "the ESP cannot be mounted here (no vfat) and mtools is not installed"
        return Outcome(ACTION, OutcomeStatus.SKIPPED, why)
    device = esp.device
    top = await _mdir(device, "/EFI")
    if not top:
        return Outcome(ACTION, OutcomeStatus.SKIPPED, "no \\EFI directory on the ESP")
    if "bootx64.efi" in (await _mdir(device, "/EFI/BOOT") if "boot" in top else {}):
        return Outcome(ACTION, OutcomeStatus.SKIPPED, "\\EFI\\BOOT\\BOOTX64.EFI already exists")
    vendors = {name: path for name, path in top.items() if name != "boot"}
    order = [v for v in PREFERRED_VENDORS if v in vendors]
    order += sorted(v for v in vendors if v not in order)
    for vendor in order:
        files = await _mdir(device, vendors[vendor].removeprefix("::"))
        if "shimx64.efi" in files or "grubx64.efi" in files:
            break
    else:
        return Outcome(
            ACTION, OutcomeStatus.SKIPPED, "no x86-64 loader (shimx64.efi, grubx64.efi) on the ESP"
        )
    if not ctx.dry_run and "boot" not in top:
        await proc.run(["mmd", "-i", device, "::/EFI/BOOT"], timeout=MTOOLS_TIMEOUT,
                       env=MTOOLS_ENV)  # fmt: skip
    for name, target in _copies(files).items():
        source = files[name]
        guest_target = f"{FALLBACK_DIR}/{target}"
        ctx.changes.record(ACTION, guest_target, "created", f"copy of {ESP_EFI}"
                           f"{source.removeprefix('::/EFI')}")  # fmt: skip
        if not ctx.dry_run:
            await _mcopy(device, source, f"::/EFI/BOOT/{target}", scratch)
    notes = [
        f"the ESP ({device}) was written with mtools: the agent's kernel cannot mount vfat",
        f"fallback loader copied from {vendors[vendor].removeprefix('::')}; the guest's "
        "grub-install refreshes it only when told to (Debian: grub2/force_efi_extra_removable)",
    ]
    return changed_outcome(ctx, ACTION, "nothing to copy", notes)
