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
    if "shimx64.efi" in files:
        copies = {"shimx64.efi": "BOOTX64.EFI", "grubx64.efi": "grubx64.efi",
                  "mmx64.efi": "mmx64.efi"}  # fmt: skip
    else:
        copies = {"grubx64.efi": "BOOTX64.EFI"}
    copies["grub.cfg"] = "grub.cfg"
    for name, target in copies.items():
        if name in files:
            ctx.changes.copy_file(ACTION, files[name], f"{FALLBACK_DIR}/{target}")
    notes = [
        f"fallback loader copied from {vendor}; the guest's grub-install refreshes it only "
        "when told to (Debian: grub2/force_efi_extra_removable)"
    ]
    return changed_outcome(ctx, ACTION, "nothing to copy", notes)
