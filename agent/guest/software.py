"""The guest's init system and the hypervisor tools installed in it.

Tools are recognised by their files (programs, service units, init scripts) and, on Debian-like
guests, by the package database (``/var/lib/dpkg/status``); ``enabled`` means a unit is wanted
by a target or a SysV start link exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.guest.files import small_text
from agent.repair.guestfs import GuestPathError, GuestRoot

UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
MAX_DPKG_STATUS = 64 * 1024 * 1024


@dataclass(frozen=True)
class ToolSignature:
    programs: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    scripts: tuple[str, ...] = ()  # /etc/init.d names
    packages: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()


HYPERVISOR_TOOLS: dict[str, ToolSignature] = {
    "open-vm-tools": ToolSignature(
        programs=("/usr/bin/vmtoolsd",),
        units=("open-vm-tools.service", "vmtoolsd.service"),
        scripts=("open-vm-tools",),
        packages=("open-vm-tools",),
    ),
    # VMware's own tarball installation (vmware-install.pl).
    "vmware-tools": ToolSignature(
        units=("vmware-tools.service",),
        scripts=("vmware-tools",),
        paths=("/etc/vmware-tools/locations", "/usr/lib/vmware-tools"),
    ),
    "hyperv-daemons": ToolSignature(
        programs=("/usr/sbin/hv_kvp_daemon", "/usr/sbin/hypervkvpd"),
        units=("hypervkvpd.service", "hv-kvp-daemon.service", "hv_kvp_daemon.service"),
        scripts=("hyperv-daemons",),
        packages=("hyperv-daemons",),
    ),
    "qemu-guest-agent": ToolSignature(
        programs=("/usr/bin/qemu-ga", "/usr/sbin/qemu-ga"),
        units=("qemu-guest-agent.service",),
        scripts=("qemu-guest-agent",),
        packages=("qemu-guest-agent",),
    ),
}
INIT_NAMES = (
    ("systemd", "systemd"),
    ("upstart", "upstart"),
    ("openrc", "openrc"),
    ("busybox", "busybox"),
    ("runit", "runit"),
)


@dataclass
class InstalledTool:
    name: str
    evidence: list[str] = field(default_factory=list)
    enabled: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "enabled": self.enabled, "evidence": self.evidence}


def dpkg_installed(root: GuestRoot) -> set[str]:
    """Package names dpkg records as installed."""
    text = small_text(root, "/var/lib/dpkg/status", MAX_DPKG_STATUS) or ""
    installed = set()
    for stanza in text.split("\n\n"):
        pairs = (line.partition(":") for line in stanza.split("\n"))
        fields = {k.strip(): v.strip() for k, _, v in pairs}
        if fields.get("Status", "").endswith(" installed") and fields.get("Package"):
            installed.add(fields["Package"])
    return installed


def _enabled_unit(root: GuestRoot, unit: str) -> str | None:
    for wants in root.glob("/etc/systemd/system", "*.wants"):
        if root.exists(f"{wants}/{unit}"):
            return f"{wants}/{unit}"
    return None


def _sysv_started(root: GuestRoot, script: str) -> str | None:
    for rc in root.glob("/etc", "rc[2-5].d"):
        found = root.glob(rc, f"S[0-9][0-9]{script}")
        if found:
            return found[0]
    return None


def _detect_tool(
    root: GuestRoot, name: str, signature: ToolSignature, packages: set[str]
) -> InstalledTool | None:
    tool = InstalledTool(name)
    tool.evidence += [p for p in (*signature.programs, *signature.paths) if root.exists(p)]
    for unit in signature.units:
        tool.evidence += [f"{d}/{unit}" for d in UNIT_DIRS if root.exists(f"{d}/{unit}")]
        if (link := _enabled_unit(root, unit)) is not None:
            tool.enabled = True
            tool.evidence.append(link)
    for script in signature.scripts:
        if root.exists(f"/etc/init.d/{script}"):
            tool.evidence.append(f"/etc/init.d/{script}")
        if (link := _sysv_started(root, script)) is not None:
            tool.enabled = True
            tool.evidence.append(link)
    tool.evidence += [f"dpkg package {p}" for p in signature.packages if p in packages]
    return tool if tool.evidence else None


def hypervisor_tools(root: GuestRoot) -> list[InstalledTool]:
    """The hypervisor guest tools found in the guest (VMware, Hyper-V, QEMU)."""
    packages = dpkg_installed(root)
    found = [_detect_tool(root, n, s, packages) for n, s in HYPERVISOR_TOOLS.items()]
    return [tool for tool in found if tool is not None]


def init_system(root: GuestRoot) -> dict[str, str]:
    """The init system: what ``/sbin/init`` is (followed inside the guest), else a guess from
    the files present, with the evidence."""
    for init in ("/sbin/init", "/usr/sbin/init"):
        if not root.exists(init):
            continue
        try:
            target = root.guest_name(root.resolve(init))
        except (GuestPathError, ValueError):
            continue
        for needle, name in INIT_NAMES:
            if needle in target:
                return {"name": name, "evidence": f"{init} -> {target}"}
        if root.exists("/etc/inittab"):
            return {"name": "sysvinit", "evidence": f"{init} is {target}, /etc/inittab present"}
        return {"name": "unknown", "evidence": f"{init} is {target}"}
    for systemd in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd"):
        if root.exists(systemd):
            return {"name": "systemd", "evidence": f"{systemd} present (no /sbin/init)"}
    if root.exists("/etc/inittab"):
        return {"name": "sysvinit", "evidence": "/etc/inittab present (no /sbin/init)"}
    return {"name": "unknown", "evidence": "no /sbin/init, systemd or /etc/inittab"}
