"""The guest's network configuration files and the MAC addresses they are bound to.

A configuration bound to the VMware NIC's MAC stops matching on KVM (the NIC gets a new MAC),
so the interface comes up unconfigured: these are what a user wants listed. Read: netplan
(``match: macaddress``), ifcfg (``HWADDR``), NetworkManager keyfiles (``mac-address``),
udev persistent-net rules (``ATTR{address}``) and systemd-networkd/.link files
(``MACAddress=``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from agent.guest.files import small_text
from agent.repair.guestfs import GuestRoot

_MAC = r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
_UDEV_MAC = re.compile(r'ATTRS?\{address\}=="(' + _MAC + r')"')
_UDEV_NAME = re.compile(r'NAME:?="([^"]+)"')
_ANY_MAC = re.compile(_MAC)
LOCATIONS: tuple[tuple[str, str, str], ...] = (
    ("netplan", "/etc/netplan", "*.yaml"),
    ("ifcfg", "/etc/sysconfig/network-scripts", "ifcfg-*"),
    ("ifcfg", "/etc/sysconfig/network", "ifcfg-*"),
    ("networkmanager", "/etc/NetworkManager/system-connections", "*"),
    ("udev", "/etc/udev/rules.d", "*.rules"),
    ("systemd-networkd", "/etc/systemd/network", "*.network"),
    ("systemd-link", "/etc/systemd/network", "*.link"),
)


@dataclass(frozen=True)
class MacBinding:
    interface: str
    mac: str


@dataclass
class NetworkConfig:
    path: str
    kind: str
    bindings: list[MacBinding] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "bound_to_mac": bool(self.bindings),
            "bindings": [{"interface": b.interface, "mac": b.mac} for b in self.bindings],
        }


def _key_values(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


def _sections(text: str) -> dict[str, dict[str, str]]:
    """An INI-like file (keyfiles, systemd units) as section -> key -> value (last wins)."""
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip().lower(), {})
        elif "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def netplan_bindings(text: str) -> list[MacBinding]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return [MacBinding("", m.lower()) for m in _ANY_MAC.findall(text)]
    network = document.get("network") if isinstance(document, dict) else None
    found = []
    for group in ("ethernets", "wifis"):
        devices = network.get(group) if isinstance(network, dict) else None
        for name, device in (devices or {}).items() if isinstance(devices, dict) else ():
            match = device.get("match") if isinstance(device, dict) else None
            mac = match.get("macaddress") if isinstance(match, dict) else None
            if isinstance(mac, str):
                found.append(MacBinding(str(device.get("set-name") or name), mac.lower()))
    return found


def ifcfg_bindings(text: str) -> list[MacBinding]:
    values = _key_values(text)
    mac = values.get("HWADDR", "")
    if not _ANY_MAC.fullmatch(mac):
        return []
    return [MacBinding(values.get("DEVICE") or values.get("NAME", ""), mac.lower())]


def keyfile_bindings(text: str) -> list[MacBinding]:
    sections = _sections(text)
    name = sections.get("connection", {}).get("interface-name", "")
    found = []
    for section in ("ethernet", "802-3-ethernet", "wifi"):
        mac = sections.get(section, {}).get("mac-address", "")
        if _ANY_MAC.fullmatch(mac):
            found.append(MacBinding(name, mac.lower()))
    return found


def udev_bindings(text: str) -> list[MacBinding]:
    found = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        mac, name = _UDEV_MAC.search(line), _UDEV_NAME.search(line)
        if mac:
            found.append(MacBinding(name.group(1) if name else "", mac.group(1).lower()))
    return found


def networkd_bindings(text: str) -> list[MacBinding]:
    sections = _sections(text)
    match = sections.get("match", {})
    name = sections.get("link", {}).get("Name") or match.get("Name", "")
    macs = match.get("MACAddress", "").split()
    return [MacBinding(name, m.lower()) for m in macs if _ANY_MAC.fullmatch(m)]


PARSERS = {
    "netplan": netplan_bindings,
    "ifcfg": ifcfg_bindings,
    "networkmanager": keyfile_bindings,
    "udev": udev_bindings,
    "systemd-networkd": networkd_bindings,
    "systemd-link": networkd_bindings,
}


def network_configs(root: GuestRoot) -> list[NetworkConfig]:
    """Every network configuration file found, with its MAC bindings (possibly none).

    udev rule files are listed only when they bind a name to a MAC (most rules are not about
    the network at all).
    """
    found = []
    for kind, directory, pattern in LOCATIONS:
        for path in root.glob(directory, pattern):
            text = small_text(root, path)
            if text is None:
                continue
            bindings = PARSERS[kind](text)
            if kind == "udev" and not bindings:
                continue
            found.append(NetworkConfig(path, kind, bindings))
    return found
