"""grub_root_uuid: kernel command lines say ``root=UUID=...``; stale device.map removed.

Covers ``/etc/default/grub``, ``/etc/kernel/cmdline``, grub.cfg (BIOS and EFI), BLS entries
(``/boot/loader/entries/*.conf``), extlinux and legacy grub's menu.lst. Only ``root=`` values
that are device names (``/dev/sda2``, ``/dev/disk/by-id/...``) are rewritten; LVM and other
names are left and reported.
"""

from __future__ import annotations

import re

from agent.repair.fixes.base import FixContext, Outcome, OutcomeStatus, changed_outcome

ACTION = "grub_root_uuid"
_ROOT_ARG = re.compile(r"(?<![\w.-])root=(?P<value>/dev/[^\s\"'\\]+)")
STATIC_FILES = (
    "/etc/default/grub",
    "/etc/kernel/cmdline",
    "/boot/grub2/grub.cfg",
    "/boot/grub/grub.cfg",
    "/boot/extlinux/extlinux.conf",
    "/extlinux.conf",
    "/boot/grub/menu.lst",
)
DEVICE_MAPS = ("/boot/grub2/device.map", "/boot/grub/device.map")


def boot_files(ctx: FixContext) -> list[str]:
    """Every boot configuration file of the guest that exists."""
    files = [f for f in STATIC_FILES if ctx.root.read_text(f) is not None]
    for vendor in ctx.root.glob("/boot/efi/EFI", "*"):
        files += [f for f in ctx.root.glob(vendor, "grub.cfg")]
    files += ctx.root.glob("/boot/loader/entries", "*.conf")
    return files


def _rewrite(ctx: FixContext, path: str, text: str, notes: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        value = match["value"]
        if value.startswith("/dev/disk/by-uuid/"):
            return f"root=UUID={value.rsplit('/', 1)[1]}"
        resolution = ctx.devices.resolve(value)
        if resolution.uuid_spec is None:
            notes.append(f"{path}: left root={value}: {resolution.reason}")
            return match.group(0)
        notes.append(f"{path}: root={value} -> root={resolution.uuid_spec}")
        return f"root={resolution.uuid_spec}"

    return _ROOT_ARG.sub(replace, text)


def fix_grub_root_uuid(ctx: FixContext) -> Outcome:
    """Rewrite root= device names in every boot configuration; remove stale device.map."""
    notes: list[str] = []
    files = boot_files(ctx)
    if not files:
        return Outcome(
            ACTION, OutcomeStatus.SKIPPED, "no boot loader configuration found in the guest"
        )
    for path in files:
        text = ctx.root.read_text(path) or ""
        ctx.changes.write_text(ACTION, path, _rewrite(ctx, path, text, notes))
    for path in DEVICE_MAPS:
        if ctx.root.read_text(path) is not None:
            ctx.changes.remove(ACTION, path, "maps BIOS disks to the old controller's names")
    return changed_outcome(ctx, ACTION, "root= already refers to stable names", notes)
