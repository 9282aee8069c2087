"""The guest an inspection described (``details.guest``), as `h2kctl get` shows it."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table


def _os(guest: dict[str, Any]) -> str:
    os_info = guest.get("os") or {}
    name = os_info.get("name") or os_info.get("id", "unknown")
    return f"{name} (id {os_info.get('id', '-')}, version {os_info.get('version') or '-'})"


def _firmware(guest: dict[str, Any]) -> str:
    firmware = guest.get("firmware") or {}
    text = f"{firmware.get('type', 'unknown')}, table {firmware.get('partition_table') or '-'}"
    esp = firmware.get("esp")
    if esp:
        text += f", ESP disk {esp['disk']} partition {esp['partition']}"
        fresh = firmware.get("fresh_nvram_bootable")
        text += ", boots on fresh NVRAM" if fresh else ", needs its NVRAM boot entry"
    return text


def _bootloaders(guest: dict[str, Any]) -> str:
    loaders = guest.get("bootloaders") or []
    return (
        ", ".join(
            f"{b['kind']}{'/' + b['platform'] if b['platform'] else ''} at {b['path']}"
            for b in loaders
        )
        or "none found"
    )


def _initramfs(image: dict[str, Any]) -> str:
    packing = "+".join(image.get("packing") or []) or "-"
    if not image.get("readable"):
        return f"{image['path']} ({packing}): not read: {image.get('error')}"
    missing = image.get("virtio_missing") or []
    virtio = "virtio drivers present" if not missing else f"virtio missing: {', '.join(missing)}"
    return f"{image['path']} ({packing}): {virtio}"


def _fstab(entry: dict[str, Any]) -> str:
    return f"{entry['mountpoint']} <- {entry['spec']} (by {entry['naming']})"


def _network(config: dict[str, Any]) -> str:
    bindings = config.get("bindings") or []
    bound = ", ".join(f"{b['interface'] or '?'}={b['mac']}" for b in bindings) or "not bound"
    return f"{config['path']} ({config['kind']}): {bound}"


def guest_summary(guest: dict[str, Any]) -> Table:
    """One row per aspect of the guest; lists one item a line."""
    grid = Table(title="Guest", title_justify="left", box=None, show_header=False)
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    root = guest.get("root") or {}
    tools = guest.get("hypervisor_tools") or []
    rows: list[tuple[str, str]] = [
        ("OS", _os(guest)),
        ("Init", (guest.get("init_system") or {}).get("name", "unknown")),
        ("Firmware", _firmware(guest)),
        ("Boot loaders", _bootloaders(guest)),
        ("Root", f"{root.get('spec') or '-'} ({root.get('fstype') or '-'})"),
        ("Kernels", ", ".join(k["version"] for k in guest.get("kernels") or []) or "none found"),
        ("Initramfs", "\n".join(map(_initramfs, guest.get("initramfs") or [])) or "none found"),
        ("Fstab", "\n".join(map(_fstab, guest.get("fstab") or [])) or "-"),
        ("Network", "\n".join(map(_network, guest.get("network") or [])) or "none found"),
        (
            "Hypervisor tools",
            ", ".join(f"{t['name']}{' (enabled)' if t['enabled'] else ''}" for t in tools)
            or "none found",
        ),
    ]
    for key, value in rows:
        grid.add_row(key, escape(value))
    return grid


def guest_parts(details: dict[str, Any]) -> list[RenderableType]:
    """What `h2kctl get` adds for a job whose details describe a guest (none otherwise)."""
    if "guest" not in details:
        return []
    guest = details["guest"]
    if not isinstance(guest, dict):
        return ["", f"[bold]Guest[/] not described: {escape(str(details.get('guest_error')))}"]
    return ["", guest_summary(guest)]
