"""A structural check of a ``kubevirt.io/v1`` VirtualMachine: the keys, types and cross-references
KubeVirt's API and admission webhook insist on, for the subset of the API h2k writes.

No KubeVirt OpenAPI schema ships in any package this project can install, so this encodes the
v1 API by hand; unknown keys are errors (they would be typos h2k made, since KubeVirt prunes
them silently).
"""

from __future__ import annotations

import re
from typing import Any

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QUANTITY = re.compile(r"^[0-9]+(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
RUN_STRATEGIES = {"Always", "RerunOnFailure", "Manual", "Halted", "Once"}
DISK_BUSES = {"virtio", "sata", "scsi", "usb"}
NIC_MODELS = {"virtio", "e1000", "e1000e", "ne2k_pci", "pcnet", "rtl8139"}
NIC_BINDINGS = {"bridge", "masquerade", "sriov", "passt", "slirp"}
VOLUME_SOURCES = {"dataVolume", "persistentVolumeClaim", "containerDisk", "cloudInitNoCloud"}


class Shape:
    """Collects problems as ``path: message`` while walking a manifest."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(
        self,
        value: Any,
        path: str,
        allowed: set[str],
        required: frozenset[str] | set[str] = frozenset(),
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, not {type(value).__name__}")
            return {}
        for key in sorted(set(value) - allowed):
            self.fail(f"{path}.{key}", "is not a field of the v1 API here")
        for key in sorted(required - set(value)):
            self.fail(f"{path}.{key}", "is required")
        return value

    def one_of(self, value: dict[str, Any], path: str, choices: set[str]) -> str | None:
        present = sorted(set(value) & choices)
        if len(present) != 1:
            self.fail(path, f"needs exactly one of {sorted(choices)}, has {present}")
            return None
        return present[0]

    def matches(self, value: Any, path: str, pattern: re.Pattern[str], what: str) -> None:
        if not isinstance(value, str) or not pattern.match(value):
            self.fail(path, f"{value!r} is not {what}")

    def positive_int(self, value: Any, path: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.fail(path, f"{value!r} is not a positive integer")


def virtual_machine_problems(manifest: Any) -> list[str]:
    """Every way ``manifest`` is not a valid VirtualMachine (empty: it is)."""
    shape = Shape()
    root = shape.mapping(
        manifest,
        "$",
        {"apiVersion", "kind", "metadata", "spec"},
        {"apiVersion", "kind", "metadata", "spec"},
    )
    if root.get("apiVersion") != "kubevirt.io/v1":
        shape.fail("$.apiVersion", f"{root.get('apiVersion')!r} is not kubevirt.io/v1")
    if root.get("kind") != "VirtualMachine":
        shape.fail("$.kind", f"{root.get('kind')!r} is not VirtualMachine")
    _check_metadata(shape, root.get("metadata"), "$.metadata", needs_name=True)
    spec = shape.mapping(
        root.get("spec"), "$.spec", {"running", "runStrategy", "template"}, {"template"}
    )
    if ("running" in spec) == ("runStrategy" in spec):
        shape.fail("$.spec", "needs exactly one of running and runStrategy")
    if "running" in spec and not isinstance(spec["running"], bool):
        shape.fail("$.spec.running", "must be a boolean")
    if "runStrategy" in spec and spec["runStrategy"] not in RUN_STRATEGIES:
        shape.fail("$.spec.runStrategy", f"{spec['runStrategy']!r} is not a run strategy")
    template = shape.mapping(
        spec.get("template"), "$.spec.template", {"metadata", "spec"}, {"spec"}
    )
    if "metadata" in template:
        _check_metadata(shape, template["metadata"], "$.spec.template.metadata", needs_name=False)
    _check_vmi_spec(shape, template.get("spec"), "$.spec.template.spec")
    return shape.problems


def _check_metadata(shape: Shape, value: Any, path: str, *, needs_name: bool) -> None:
    metadata = shape.mapping(
        value,
        path,
        {"name", "namespace", "labels", "annotations"},
        {"name"} if needs_name else set(),
    )
    for key in ("name", "namespace"):
        if key in metadata:
            shape.matches(metadata[key], f"{path}.{key}", DNS_LABEL, "a DNS-1123 label")
    for key, label in shape.mapping(
        metadata.get("labels", {}), f"{path}.labels", set(metadata.get("labels", {}) or {})
    ).items():
        shape.matches(key, f"{path}.labels", LABEL_KEY, "a label key")
        shape.matches(label, f"{path}.labels.{key}", LABEL_VALUE, "a label value")
    for key, note in (metadata.get("annotations") or {}).items():
        if not isinstance(key, str) or not isinstance(note, str):
            shape.fail(f"{path}.annotations.{key}", "keys and values must be strings")


def _check_vmi_spec(shape: Shape, value: Any, path: str) -> None:
    spec = shape.mapping(value, path, {"domain", "networks", "volumes"}, {"domain"})
    domain = shape.mapping(
        spec.get("domain"),
        f"{path}.domain",
        {"cpu", "memory", "resources", "machine", "firmware", "features", "devices"},
        {"devices"},
    )
    cpu = shape.mapping(
        domain.get("cpu", {}), f"{path}.domain.cpu", {"cores", "sockets", "threads"}
    )
    for key, count in cpu.items():
        shape.positive_int(count, f"{path}.domain.cpu.{key}")
    memory = shape.mapping(domain.get("memory", {}), f"{path}.domain.memory", {"guest"})
    if "guest" in memory:
        shape.matches(memory["guest"], f"{path}.domain.memory.guest", QUANTITY, "a quantity")
    resources = shape.mapping(
        domain.get("resources", {}), f"{path}.domain.resources", {"requests", "limits"}
    )
    for kind in ("requests", "limits"):
        for key, amount in shape.mapping(
            resources.get(kind, {}), f"{path}.domain.resources.{kind}", {"memory", "cpu"}
        ).items():
            shape.matches(amount, f"{path}.domain.resources.{kind}.{key}", QUANTITY, "a quantity")
    firmware = shape.mapping(
        domain.get("firmware", {}), f"{path}.domain.firmware", {"bootloader", "uuid", "serial"}
    )
    secure_boot = False
    if "bootloader" in firmware:
        bootloader = shape.mapping(
            firmware["bootloader"], f"{path}.domain.firmware.bootloader", {"bios", "efi"}
        )
        if shape.one_of(bootloader, f"{path}.domain.firmware.bootloader", {"bios", "efi"}) == "efi":
            efi = shape.mapping(
                bootloader["efi"],
                f"{path}.domain.firmware.bootloader.efi",
                {"secureBoot", "persistent"},
            )
            if not isinstance(efi.get("secureBoot", True), bool):
                shape.fail(f"{path}.domain.firmware.bootloader.efi.secureBoot", "must be a boolean")
            secure_boot = efi.get("secureBoot", True) is True  # KubeVirt's default is true
    features = shape.mapping(
        domain.get("features", {}), f"{path}.domain.features", {"smm", "acpi", "apic"}
    )
    smm = shape.mapping(features.get("smm", {}), f"{path}.domain.features.smm", {"enabled"})
    if secure_boot and smm.get("enabled") is not True:
        shape.fail(f"{path}.domain.features.smm.enabled", "must be true with EFI secure boot")
    _check_devices_and_sources(shape, domain.get("devices"), spec, path)


def _check_devices_and_sources(shape: Shape, value: Any, spec: dict[str, Any], path: str) -> None:
    devices = shape.mapping(
        value, f"{path}.domain.devices", {"disks", "interfaces", "rng", "autoattachPodInterface"}
    )
    disk_names, boot_orders = [], []
    for i, item in enumerate(devices.get("disks", [])):
        where = f"{path}.domain.devices.disks[{i}]"
        disk = shape.mapping(item, where, {"name", "disk", "bootOrder"}, {"name"})
        shape.matches(disk.get("name"), f"{where}.name", DNS_LABEL, "a DNS-1123 label")
        disk_names.append(disk.get("name"))
        if shape.one_of(disk, where, {"disk", "lun", "cdrom"}) == "disk":
            bus = shape.mapping(disk["disk"], f"{where}.disk", {"bus"}).get("bus")
            if bus not in DISK_BUSES:
                shape.fail(f"{where}.disk.bus", f"{bus!r} is not one of {sorted(DISK_BUSES)}")
        if "bootOrder" in disk:
            shape.positive_int(disk["bootOrder"], f"{where}.bootOrder")
            boot_orders.append(disk["bootOrder"])
    if len(set(boot_orders)) != len(boot_orders):
        shape.fail(f"{path}.domain.devices.disks", f"boot orders {boot_orders} repeat")
    volume_names = []
    for i, item in enumerate(spec.get("volumes", [])):
        where = f"{path}.volumes[{i}]"
        volume = shape.mapping(item, where, {"name"} | VOLUME_SOURCES, {"name"})
        volume_names.append(volume.get("name"))
        source = shape.one_of(volume, where, VOLUME_SOURCES)
        if source == "dataVolume":
            shape.mapping(volume[source], f"{where}.dataVolume", {"name"}, {"name"})
        elif source == "persistentVolumeClaim":
            shape.mapping(
                volume[source],
                f"{where}.persistentVolumeClaim",
                {"claimName", "readOnly"},
                {"claimName"},
            )
    if sorted(disk_names, key=str) != sorted(volume_names, key=str) or len(set(disk_names)) != len(
        disk_names
    ):
        shape.fail(f"{path}.volumes", f"names {volume_names} do not match the disks' {disk_names}")
    _check_interfaces(shape, devices.get("interfaces", []), spec.get("networks", []), path)


def _check_interfaces(shape: Shape, interfaces: Any, networks: Any, path: str) -> None:
    kinds: dict[Any, str | None] = {}
    for i, item in enumerate(networks):
        where = f"{path}.networks[{i}]"
        network = shape.mapping(item, where, {"name", "pod", "multus"}, {"name"})
        kinds[network.get("name")] = kind = shape.one_of(network, where, {"pod", "multus"})
        if kind == "multus":
            shape.mapping(
                network["multus"], f"{where}.multus", {"networkName", "default"}, {"networkName"}
            )
    if list(kinds.values()).count("pod") > 1:
        shape.fail(f"{path}.networks", "has more than one pod network")
    names = []
    for i, item in enumerate(interfaces):
        where = f"{path}.domain.devices.interfaces[{i}]"
        interface = shape.mapping(
            item, where, {"name", "model", "macAddress"} | NIC_BINDINGS, {"name"}
        )
        names.append(interface.get("name"))
        if interface.get("model", "virtio") not in NIC_MODELS:
            shape.fail(f"{where}.model", f"{interface.get('model')!r} is not a NIC model")
        if "macAddress" in interface:
            shape.matches(interface["macAddress"], f"{where}.macAddress", MAC, "a MAC address")
        binding = shape.one_of(interface, where, NIC_BINDINGS)
        if binding == "masquerade" and kinds.get(interface.get("name")) != "pod":
            shape.fail(f"{where}.masquerade", "is only for the pod network")
    if sorted(names, key=str) != sorted(kinds, key=str) or len(set(names)) != len(names):
        shape.fail(f"{path}.networks", f"names {list(kinds)} do not match the interfaces' {names}")
