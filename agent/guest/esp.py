"""Read an EFI system partition that is not mounted (a kernel without vfat, an ESP the fstab
does not name): its directory listing from the read-only device with mtools' ``mdir``, which
parses FAT in user space and opens nothing for writing."""

from __future__ import annotations

import logging

from agent import proc
from agent.guest.boot import MAX_EFI_FILES

log = logging.getLogger(__name__)

MDIR_TIMEOUT = 60.0


def efi_paths(listing: str, mountpoint: str) -> list[str]:
    """The ``EFI/<vendor>/<name>.efi`` files of an ``mdir -/ -b`` listing, as guest paths
    under ``mountpoint`` (where the guest mounts its ESP)."""
    found = []
    for line in listing.splitlines():
        path = line.strip().removeprefix("::").lstrip("/")
        parts = path.split("/")
        if len(parts) == 3 and parts[0].lower() == "efi" and parts[2].lower().endswith(".efi"):
            found.append(f"{mountpoint.rstrip('/')}/{path}")
    return sorted(found)[:MAX_EFI_FILES]


async def unmounted_efi_binaries(device: str, mountpoint: str) -> list[str] | None:
    """The EFI binaries of the FAT file system on ``device``; None when mdir is missing or
    cannot read it (the report then says the ESP was not read)."""
    if proc.which("mdir") is None:
        return None
    try:
        # -/: recursive, -b: bare paths; -i: the device as the image (MTOOLS_SKIP_CHECK:
        # do not refuse a file system whose geometry looks odd to mtools).
        result = await proc.run(
            ["mdir", "-i", device, "-/", "-b", "::/"],
            timeout=MDIR_TIMEOUT,
            capture_stdout=True,
            env={"MTOOLS_SKIP_CHECK": "1"},
        )
    except proc.CommandError as exc:
        log.warning("cannot list the ESP device=%s error=%s", device, exc)
        return None
    return efi_paths(result.stdout, mountpoint)
