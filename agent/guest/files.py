"""Reading a guest's configuration files with a size bound: the guest is untrusted, and a
multi-gigabyte file where a config file should be must not be read into the agent's memory."""

from __future__ import annotations

import os
import stat

from agent.repair.guestfs import GuestPathError, GuestRoot

MAX_CONFIG_BYTES = 1024 * 1024


def small_text(root: GuestRoot, guest_path: str, limit: int = MAX_CONFIG_BYTES) -> str | None:
    """A regular file's text when it is at most ``limit`` bytes; None when absent, not a
    regular file, or larger."""
    try:
        host = root.resolve(guest_path)
        info = os.lstat(host)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        with open(host, "rb") as file:
            return file.read(limit + 1)[:limit].decode(errors="surrogateescape")
    except (OSError, GuestPathError):
        return None
