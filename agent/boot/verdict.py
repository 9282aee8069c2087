"""Did the guest boot? The rule, from what the guest shows and does, with nothing planted in it.

A VMware guest does not send its kernel to the serial port (no ``console=ttyS0``), so the check
reads everything the guest shows anyway, from outside:

- the firmware's log: SeaBIOS writes its messages to the debug port (``No bootable device.``);
  OVMF's boot manager and its shell print on the serial port;
- the serial port, where GRUB under OVMF prints (EFI consoles include the serial terminal), and
  where a guest configured for a serial console prints everything;
- the VGA text screen (BIOS guests): GRUB's ``Loading Linux ...`` lines, and the kernel's and
  the initramfs's messages (``Kernel panic``, ``Gave up waiting for root``, ``(initramfs)``),
  which stay in text mode until a graphics driver loads (the initramfs of a guest that cannot
  find its root never loads one);
- the disks' request counters (QMP ``query-blockstats``) through the throwaway overlay.

The rule, in order:

1. ``booted`` when the guest has written :data:`BOOTED_WRITES` requests to its disks. Firmware
   writes its variables to flash, not to the disk; GRUB writes at most its 1 KiB environment
   block (one or two requests); an initramfs mounts the root read-only. Many writes mean an
   operating system mounted its file systems read-write: userspace is up (systemd remounts the
   root read-write among its first steps). The time of that sample is the time to userspace.
2. ``no_bootloader`` when the firmware says it found nothing to boot (SeaBIOS ``No bootable
   device``, OVMF dropping to its shell or finding no boot option).
3. ``kernel_panic`` / ``root_not_found`` when the console or the screen shows the kernel's panic
   or the initramfs giving up on the root (its shell prompt).
4. ``root_not_found`` (inferred) when the bootloader has handed over to a kernel (its ``Loading
   Linux`` line was seen) and the disks then stay idle for :data:`IDLE_AFTER_KERNEL_SECONDS`: a
   kernel that has a driver for its disk reads the partition table and the root within seconds;
   one without (a VMware initramfs on virtio) never reads it again. Used where the screen is a
   framebuffer the check cannot read (UEFI guests); the detail says it was inferred.
5. ``hung`` when none of this happened within the time limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

BOOTED_WRITES = 16
# How long the disks may stay idle after the kernel was loaded. Under TCG on a busy node the
# kernel took 46 s from GRUB to its first virtio read (measured), so TCG waits much longer.
IDLE_AFTER_KERNEL_SECONDS = {"kvm": 60.0, "tcg": 180.0}
TAIL_CHARS = 2000

_NO_BOOTLOADER = re.compile(
    r"No bootable device|Boot failed: not a bootable disk|No bootable option or device"
    r"|UEFI Interactive Shell|Shell> |Press ESC in \d+ seconds to skip startup\.nsh"
)
_PANIC = re.compile(r"Kernel panic - not syncing[^\n]*")
_ROOT_NOT_FOUND = re.compile(
    r"Gave up waiting for root[^\n]*|ALERT! [^\n]*does not exist[^\n]*|\(initramfs\)"
    r"|dracut-initqueue[^\n]*timeout[^\n]*|Could not boot\.?|Entering emergency mode[^\n]*"
)
_KERNEL_LOADED = re.compile(r"Loading Linux|Loading initial ramdisk")
_BLANKS = re.compile(r"[ \t]{3,}")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b.")


class Stage(StrEnum):
    """Where a guest that did not boot stopped."""

    NO_BOOTLOADER = "no_bootloader"
    KERNEL_PANIC = "kernel_panic"
    ROOT_NOT_FOUND = "root_not_found"
    HUNG = "hung"


@dataclass(frozen=True)
class Observation:
    """One sample of what the guest shows and does, ``elapsed`` seconds after QEMU started."""

    elapsed: float
    firmware_log: str = ""
    serial: str = ""
    screen: str = ""
    reads: int = 0
    writes: int = 0


@dataclass(frozen=True)
class BootResult:
    """The boot check's answer, as the report and ``h2kctl get`` show it."""

    result: str  # "booted" or "did_not_boot"
    stage: Stage | None
    detail: str
    seconds: float  # to userspace when booted, else until the check decided
    console_tail: str
    firmware: str
    accelerator: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def booted(self) -> bool:
        return self.result == "booted"

    def describe(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "result": self.result,
            "detail": self.detail,
            "firmware": self.firmware,
            "accelerator": self.accelerator,
            "console_tail": self.console_tail,
            "evidence": self.evidence,
        }
        if self.booted:
            doc["seconds_to_userspace"] = round(self.seconds, 1)
        else:
            doc["stage"] = self.stage.value if self.stage else None
            doc["seconds"] = round(self.seconds, 1)
        return doc


def clean_console(text: str) -> str:
    """Console text without terminal escapes, carriage returns and runs of blanks."""
    return _BLANKS.sub("  ", _ANSI.sub("", text).replace("\r", ""))


def screen_text(vga_memory: bytes, columns: int = 80) -> str:
    """The VGA text screen (character, attribute pairs) as lines of text."""
    chars = bytes(b if 32 <= b < 127 else 32 for b in vga_memory[::2])
    lines = [chars[i : i + columns].decode("ascii").rstrip() for i in range(0, len(chars), columns)]
    return "\n".join(line for line in lines if line)


class BootWatch:
    """Applies the rule (module docstring) to successive observations."""

    def __init__(self, firmware: str, accelerator: str) -> None:
        self.firmware = firmware
        self.accelerator = accelerator
        self._kernel_seen_reads: int | None = None
        self._last_reads = 0
        self._reads_changed_at = 0.0

    def tail(self, obs: Observation) -> str:
        # The last words of each: the firmware's log is long and says least.
        parts = [
            ("firmware", clean_console(obs.firmware_log)[-TAIL_CHARS // 4 :]),
            ("serial", clean_console(obs.serial)[-TAIL_CHARS // 2 :]),
            ("screen", obs.screen[-TAIL_CHARS // 2 :]),
        ]
        text = "\n".join(f"--- {name} ---\n{body.strip()}" for name, body in parts if body.strip())
        return text[-TAIL_CHARS:]

    def _result(
        self, obs: Observation, stage: Stage | None, detail: str, evidence: str
    ) -> BootResult:
        return BootResult(
            result="booted" if stage is None else "did_not_boot",
            stage=stage,
            detail=detail,
            seconds=obs.elapsed,
            console_tail=self.tail(obs),
            firmware=self.firmware,
            accelerator=self.accelerator,
            evidence={"signal": evidence, "disk_reads": obs.reads, "disk_writes": obs.writes},
        )

    def observe(self, obs: Observation) -> BootResult | None:
        """The verdict once the observations decide it, else None (keep watching)."""
        if obs.writes >= BOOTED_WRITES:
            return self._result(
                obs, None, f"the guest wrote {obs.writes} requests to its disks", "disk_writes"
            )
        shown = "\n".join((clean_console(obs.serial), obs.screen))
        everything = "\n".join((clean_console(obs.firmware_log), shown))
        if match := _NO_BOOTLOADER.search(everything):
            return self._result(
                obs, Stage.NO_BOOTLOADER, f"the firmware found nothing to boot: {match[0]!r}",
                "console",
            )  # fmt: skip
        if match := _PANIC.search(shown):
            return self._result(obs, Stage.KERNEL_PANIC, match[0].strip(), "console")
        if match := _ROOT_NOT_FOUND.search(shown):
            return self._result(obs, Stage.ROOT_NOT_FOUND, match[0].strip(), "console")
        return self._idle_verdict(obs, shown)

    def _idle_verdict(self, obs: Observation, shown: str) -> BootResult | None:
        if obs.reads != self._last_reads:
            self._last_reads, self._reads_changed_at = obs.reads, obs.elapsed
        if self._kernel_seen_reads is None and _KERNEL_LOADED.search(shown):
            self._kernel_seen_reads = obs.reads
        if self._kernel_seen_reads is None:
            return None
        idle = obs.elapsed - self._reads_changed_at
        if idle < IDLE_AFTER_KERNEL_SECONDS.get(self.accelerator, 180.0):
            return None
        detail = (
            f"inferred: the bootloader loaded the kernel, then the guest read nothing from its "
            f"disks for {idle:.0f} s (its initramfs has no driver for the virtio disk, or "
            f"cannot find the root)"
        )
        return self._result(obs, Stage.ROOT_NOT_FOUND, detail, "disks_idle_after_kernel")

    def at_time_limit(self, obs: Observation, limit: float) -> BootResult:
        """The verdict when the time limit is reached without one."""
        return self._result(
            obs,
            Stage.HUNG,
            f"no sign of userspace within the time limit of {limit:g} s "
            f"({obs.reads} disk reads, {obs.writes} writes)",
            "time_limit",
        )

    def guest_stopped(self, obs: Observation, reason: str) -> BootResult:
        """The verdict when QEMU exited before one (``-no-reboot``: a reset ends it)."""
        verdict = self.observe(obs)
        if verdict is not None:
            return verdict
        return self._result(obs, Stage.HUNG, f"{reason} before userspace", "qemu_exited")
