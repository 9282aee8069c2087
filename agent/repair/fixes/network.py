"""network_cleanup: drop network configuration bound to the VMware NICs' MAC addresses.

On the new machine the NIC has another MAC address, so configuration that matches on the old
one never applies and the guest comes up without network. Covered: ifcfg ``HWADDR``/``MACADDR``
(RHEL, SUSE), ``hwaddress`` in Debian's interfaces file, udev ``70-persistent-net.rules``,
netplan ``macaddress`` (in ``match`` and as a set address), NetworkManager keyfiles'
``mac-address``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from agent.repair.fixes.base import FixContext, Outcome, changed_outcome

ACTION = "network_cleanup"
IFCFG_DIRS = ("/etc/sysconfig/network-scripts", "/etc/sysconfig/network")
UDEV_RULES = (
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/etc/udev/rules.d/75-persistent-net-generator.rules",
)
_IFCFG_MAC = re.compile(r"^\s*(HWADDR|MACADDR)\s*=")
_INTERFACES_MAC = re.compile(r"^\s*hwaddress\s")
_KEYFILE_MAC = re.compile(r"^\s*mac-address\s*=")


def _drop_lines(ctx: FixContext, path: str, pattern: re.Pattern[str]) -> None:
    text = ctx.root.read_text(path)
    if text is None:
        return
    kept = [line for line in text.splitlines(keepends=True) if not pattern.match(line)]
    ctx.changes.write_text(ACTION, path, "".join(kept))


def _keyfile_without_mac(text: str) -> str:
    # Only the [ethernet] section binds a connection to a NIC by its address.
    out, section = [], ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
        if section in ("ethernet", "802-3-ethernet") and _KEYFILE_MAC.match(line):
            continue
        out.append(line)
    return "".join(out)


def _netplan_without_mac(doc: Any, notes: list[str], path: str) -> bool:
    """Remove MAC bindings from a netplan document in place; returns whether it changed."""
    ethernets = doc.get("network", {}).get("ethernets") if isinstance(doc, dict) else None
    if not isinstance(ethernets, dict):
        return False
    bound = [
        name
        for name, conf in ethernets.items()
        if isinstance(conf, dict)
        and (isinstance(conf.get("match"), dict) and "macaddress" in conf["match"])
    ]
    changed = False
    for name, conf in ethernets.items():
        if not isinstance(conf, dict):
            continue
        if conf.pop("macaddress", None) is not None:
            changed = True
        match = conf.get("match")
        if not isinstance(match, dict) or "macaddress" not in match:
            continue
        del match["macaddress"]
        changed = True
        if match:
            continue
        if len(bound) == 1:
            # One NIC: match any Ethernet name, so set-name still gives it the old name.
            conf["match"] = {"name": "e*"}
            notes.append(f"{path}: {name} now matches any Ethernet NIC (was its MAC)")
        else:
            conf.pop("match")
            conf.pop("set-name", None)
            notes.append(f"{path}: {name} now applies to the interface named {name}")
    return changed


def _fix_netplan(ctx: FixContext, path: str, notes: list[str]) -> None:
    text = ctx.root.read_text(path)
    if text is None:
        return
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        notes.append(f"{path}: left as it is: not valid YAML ({exc.__class__.__name__})")
        return
    if _netplan_without_mac(doc, notes, path):
        ctx.changes.write_text(ACTION, path, yaml.safe_dump(doc, sort_keys=False))


def fix_network_cleanup(ctx: FixContext) -> Outcome:
    """Remove MAC bindings from every network configuration system the guest has."""
    notes: list[str] = []
    for directory in IFCFG_DIRS:
        for path in ctx.root.glob(directory, "ifcfg-*"):
            if not path.endswith("ifcfg-lo"):
                _drop_lines(ctx, path, _IFCFG_MAC)
    _drop_lines(ctx, "/etc/network/interfaces", _INTERFACES_MAC)
    for path in UDEV_RULES:
        if ctx.root.read_text(path) is not None:
            ctx.changes.remove(ACTION, path, "names NICs by their VMware MAC addresses")
    for path in ctx.root.glob("/etc/netplan", "*.yaml"):
        _fix_netplan(ctx, path, notes)
    for path in ctx.root.glob("/etc/NetworkManager/system-connections", "*"):
        text = ctx.root.read_text(path)
        if text is not None:
            ctx.changes.write_text(ACTION, path, _keyfile_without_mac(text))
    return changed_outcome(ctx, ACTION, "no MAC-bound network configuration found", notes)
