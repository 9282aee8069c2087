"""Running a guest's own program in a chroot, with /proc, /sys and /dev bound in for it.

The guest's scratch directories get a tmpfs of their own for the chroot, so what the program
leaves there (blkid's cache ``/run/blkid/blkid.tab``, a temporary directory of a rebuild that
was killed) goes away with it instead of landing in the guest's file system.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from agent import proc
from agent.disk.journal import AttachmentJournal
from agent.disk.mount import mounted
from agent.errors import ToolFailed
from agent.repair.guestfs import GuestRoot

API_FILESYSTEMS = ("/proc", "/sys", "/dev")
SCRATCH_DIRECTORIES = ("/run", "/tmp", "/var/tmp")


@contextlib.asynccontextmanager
async def chroot_mounts(root: GuestRoot, journal: AttachmentJournal) -> AsyncIterator[None]:
    """Bind the node's /proc, /sys and /dev into the guest, and a tmpfs on each of its
    scratch directories, for the body only.

    Raises:
        ToolFailed: the guest lacks one of the directories, or a bind mount failed.
    """
    async with contextlib.AsyncExitStack() as stack:
        for source in API_FILESYSTEMS:
            if not root.is_dir(source):
                raise ToolFailed(f"the guest has no {source} directory to bind-mount into")
            target = root.resolve(source)
            await stack.enter_async_context(mounted(source, target, journal, bind=True))
        for scratch in SCRATCH_DIRECTORIES:
            if root.is_dir(scratch):  # a guest without one gets none: nothing is created
                target = root.resolve(scratch)
                options = ["nosuid", "nodev", "mode=1777"]
                await stack.enter_async_context(
                    mounted("tmpfs", target, journal, fstype="tmpfs", options=options)
                )
        yield


async def run_in_guest(
    root: GuestRoot, argv: Sequence[str], *, timeout: float
) -> proc.CommandResult:
    """Run a guest program (a guest path) chrooted into the guest.

    Raises:
        proc.CommandError: the program failed or timed out.
    """
    return await proc.run(["chroot", str(root.host_root), *argv], timeout=timeout)
