"""remove_vmware_tools: VMware tools services disabled, masked, and their boot hooks removed.

On KVM the tools only fail and slow the boot down. Enablement links (systemd ``*.wants`` and
SysV ``rc?.d``) are removed and systemd units are masked, so nothing starts them. Package files
stay: removing the packages needs the guest's own package manager, which the agent does not run.
"""

from __future__ import annotations

import re

from agent.repair.fixes.base import FixContext, Outcome, changed_outcome

ACTION = "remove_vmware_tools"
UNITS = (
    "vmtoolsd.service",
    "vmware-tools.service",
    "open-vm-tools.service",
    "vgauthd.service",
    "vgauth.service",
    "vmware-vgauth.service",
    "vmware-tools-thinprint.service",
    "run-vmblock\\x2dfuse.mount",
)
UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system", "/etc/systemd/system")
SYSV_SCRIPTS = ("vmware-tools", "open-vm-tools", "vmware-tools-thinprint")
RC_DIRS = ("/etc", "/etc/rc.d")
_SYSV_LINK = re.compile(r"^[SK]\d\d(?P<name>.+)$")


def _disable_units(ctx: FixContext, notes: list[str]) -> None:
    for wants in ctx.root.glob("/etc/systemd/system", "*.wants"):
        for unit in UNITS:
            ctx.changes.remove(ACTION, f"{wants}/{unit}", "enables a VMware tools service")
    for unit in UNITS:
        installed = [d for d in UNIT_DIRS if ctx.root.exists(f"{d}/{unit}")]
        if not installed:
            continue
        local = f"/etc/systemd/system/{unit}"
        if ctx.root.read_text(local) is not None:  # a unit file the tools installer wrote
            ctx.changes.remove(ACTION, local, "VMware tools unit installed under /etc")
        ctx.changes.symlink(ACTION, local, "/dev/null", "masked")
        notes.append(f"{unit} masked")


def _remove_sysv_hooks(ctx: FixContext) -> None:
    for base in RC_DIRS:
        for rc_dir in ctx.root.glob(base, "rc[0-6S].d"):
            for link in ctx.root.glob(rc_dir, "[SK]*"):
                match = _SYSV_LINK.match(link.rsplit("/", 1)[1])
                if match and match["name"] in SYSV_SCRIPTS:
                    ctx.changes.remove(ACTION, link, "starts VMware tools at boot")


def fix_remove_vmware_tools(ctx: FixContext) -> Outcome:
    """Disable and mask the VMware tools services; remove their SysV start links."""
    notes: list[str] = []
    _disable_units(ctx, notes)
    _remove_sysv_hooks(ctx)
    if ctx.changes.for_action(ACTION):
        notes.append("package files left in place: remove the packages from the running guest")
    return changed_outcome(ctx, ACTION, "no VMware tools services found", notes)
