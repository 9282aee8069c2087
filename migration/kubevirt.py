"""The KubeVirt ``VirtualMachine`` (``kubevirt.io/v1``) of a migrated VM, as YAML.

Model in, document out, nothing touched. The manifest does not carry the disks: each converted
disk is to be imported by the user into a DataVolume (``virtctl image-upload dv <name>
--image-path=<output>``, the default ``storage="datavolume"``) or a PVC (``storage="pvc"``)
named :func:`migration.naming.kubevirt_volume_names` of the outputs (the output file's stem as
a DNS-1123 label: ``web-01.qcow2`` -> ``web-01``). The volumes reference those by name, so the
manifest applies once the imports exist; no ``dataVolumeTemplates`` are emitted, since they
would need a source URL h2k does not have.

Shape: ``runStrategy`` (``Halted`` by default, so applying it does not boot the guest before
the operator checks it), one socket with ``cpus`` cores, memory as ``<n>Mi`` in both
``memory.guest`` and ``resources.requests.memory``, ``q35``, BIOS ``{bios: {}}`` or
``{efi: {secureBoot: ...}}`` (secure boot also enables SMM), virtio disks in boot order and
virtio interfaces keeping their MAC: ``masquerade`` on the pod network (at most one NIC), else
``bridge`` on a Multus network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import yaml

from migration.model import DiskOutput, Firmware, MigrationProblem, NetworkMap, VmDescription
from migration.naming import check_vm_name, kubevirt_name, kubevirt_volume_names

API_VERSION = "kubevirt.io/v1"
KIND = "VirtualMachine"
POD_NETWORK = "pod"
RUN_STRATEGIES = ("Always", "RerunOnFailure", "Manual", "Halted", "Once")
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
SOURCE_NAME_ANNOTATION = "h2k.io/source-vm-name"
Storage = Literal["datavolume", "pvc"]

# Free-form, but the manifest stays apply-able: JSON has no place for anything else.
Manifest = dict[str, Any]


def virtual_machine_yaml(
    vm: VmDescription,
    outputs: Sequence[DiskOutput],
    networks: NetworkMap,
    *,
    namespace: str | None = None,
    storage: Storage = "datavolume",
    run_strategy: str = "Halted",
) -> str:
    """The ``VirtualMachine`` manifest of ``vm`` as a YAML document (see the module doc).

    Raises:
        MigrationProblem: naming every reason the VM cannot be described.
    """
    return yaml.safe_dump(
        virtual_machine(
            vm,
            outputs,
            networks,
            namespace=namespace,
            storage=storage,
            run_strategy=run_strategy,
        ),
        sort_keys=False,
        allow_unicode=True,
    )


def virtual_machine(
    vm: VmDescription,
    outputs: Sequence[DiskOutput],
    networks: NetworkMap,
    *,
    namespace: str | None = None,
    storage: Storage = "datavolume",
    run_strategy: str = "Halted",
) -> Manifest:
    """The manifest of :func:`virtual_machine_yaml` as a plain dict."""
    check_vm_name(vm.name)
    name = kubevirt_name(vm.name)
    problems = _problems(vm, outputs, networks, namespace, storage, run_strategy)
    if problems:
        raise MigrationProblem(problems)
    ordered = sorted(outputs, key=lambda output: [d.id for d in vm.disks].index(output.disk_id))
    volume_names = kubevirt_volume_names(ordered)

    metadata: Manifest = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = {MANAGED_BY_LABEL: "h2k"}
    metadata["annotations"] = {SOURCE_NAME_ANNOTATION: vm.name}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "runStrategy": run_strategy,
            "template": {
                "metadata": {"labels": {"kubevirt.io/domain": name}},
                "spec": _template_spec(vm, volume_names, networks, storage),
            },
        },
    }


def _problems(
    vm: VmDescription,
    outputs: Sequence[DiskOutput],
    networks: NetworkMap,
    namespace: str | None,
    storage: str,
    run_strategy: str,
) -> list[str]:
    problems = networks.unmapped(vm)
    if namespace is not None and kubevirt_name(namespace) != namespace:
        problems.append(f"namespace: {namespace!r} is not a DNS-1123 label")
    if storage not in ("datavolume", "pvc"):
        problems.append(f"storage: {storage!r} is not datavolume or pvc")
    if run_strategy not in RUN_STRATEGIES:
        problems.append(f"run_strategy: {run_strategy!r} is not one of {', '.join(RUN_STRATEGIES)}")
    if vm.cpus < 1 or vm.memory_mib < 1:
        problems.append(f"cpus, memory_mib: {vm.cpus}, {vm.memory_mib} must be at least 1")
    if vm.secure_boot and vm.firmware != Firmware.UEFI:
        problems.append("secure_boot: needs firmware uefi")
    disk_ids = [disk.id for disk in vm.disks]
    output_ids = [output.disk_id for output in outputs]
    if not disk_ids:
        problems.append("disks: the VM has no disk")
    if sorted(output_ids) != sorted(disk_ids) or len(set(output_ids)) != len(output_ids):
        problems.append(f"outputs: disk ids {output_ids} are not one per disk of {disk_ids}")
    on_pod = [
        i
        for i, nic in enumerate(vm.nics)
        if nic.network in networks.targets
        and networks.targets[nic.network].kubevirt_network == POD_NETWORK
    ]
    if len(on_pod) > 1:
        problems.append(f"nics{on_pod}: KubeVirt gives a VM at most one pod network")
    return problems


def _template_spec(
    vm: VmDescription, volume_names: Sequence[str], networks: NetworkMap, storage: str
) -> Manifest:
    memory = f"{vm.memory_mib}Mi"
    domain: Manifest = {
        "cpu": {"sockets": 1, "cores": vm.cpus, "threads": 1},
        "memory": {"guest": memory},
        "resources": {"requests": {"memory": memory}},
        "machine": {"type": "q35"},
        "firmware": {"bootloader": _bootloader(vm)},
    }
    if vm.secure_boot:
        domain["features"] = {"smm": {"enabled": True}}
    disks = [
        {"name": name, "disk": {"bus": "virtio"}, "bootOrder": order}
        for order, name in enumerate(volume_names, start=1)
    ]
    interfaces: list[Manifest] = []
    spec_networks: list[Manifest] = []
    for i, nic in enumerate(vm.nics):
        network = networks.targets[nic.network].kubevirt_network
        nic_name = f"nic{i}"
        binding = "masquerade" if network == POD_NETWORK else "bridge"
        interfaces.append(
            {"name": nic_name, "model": "virtio", "macAddress": nic.mac.lower(), binding: {}}
        )
        source: Manifest = (
            {"pod": {}} if network == POD_NETWORK else {"multus": {"networkName": network}}
        )
        spec_networks.append({"name": nic_name, **source})
    domain["devices"] = {"disks": disks, "interfaces": interfaces, "rng": {}}
    if not interfaces:
        # Without this KubeVirt adds a pod-network NIC the source VM never had.
        domain["devices"]["autoattachPodInterface"] = False
    return {
        "domain": domain,
        "networks": spec_networks,
        "volumes": [_volume(name, storage) for name in volume_names],
    }


def _bootloader(vm: VmDescription) -> Manifest:
    if vm.firmware == Firmware.UEFI:
        return {"efi": {"secureBoot": vm.secure_boot}}
    return {"bios": {}}


def _volume(name: str, storage: str) -> Manifest:
    if storage == "pvc":
        return {"name": name, "persistentVolumeClaim": {"claimName": name}}
    return {"name": name, "dataVolume": {"name": name}}
