"""The spec the intake submits: content-derived id, the queue's output, qcow2, networks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intake.config import default_network_of, instance_queue, networks_of, queues_of
from intake.naming import migration_id_for
from intake.spec import intake_spec
from migration.manifest import read_manifest
from migration.model import MigrationProblem

DATA = Path(__file__).resolve().parents[1] / "migration" / "data"


def _content(**changes: object) -> bytes:
    document = json.loads((DATA / "vsphere-artifact-manifest.json").read_text())
    document["output"].update(changes)
    return json.dumps(document).encode()


def test_the_spec_writes_qcow2_into_the_queues_output_and_says_so() -> None:
    content = _content(format="raw")
    parsed = read_manifest(content, path_exists=lambda _: True)
    spec = intake_spec(parsed, content, output_directory="/q/out", networks={})
    assert spec.migration_id == migration_id_for("web-01", content)
    assert spec.output_directory == "/q/out" and spec.output_format == "qcow2"
    assert any("h2k-intake writes qcow2" in note for note in spec.vm.notes)
    assert spec.audit.requested_by == "h2k-intake"


def test_the_default_network_maps_every_unmapped_source() -> None:
    content = _content()
    parsed = read_manifest(content, path_exists=lambda _: True)
    default = default_network_of("bridge:br0,multus:ns/net")
    spec = intake_spec(parsed, content, output_directory="/o", networks={}, default_network=default)
    target = spec.network_map["VM Network"]
    assert target.libvirt_bridge == "br0" and target.kubevirt_network == "ns/net"
    mapped = networks_of(["VM Network=network:default"])
    spec = intake_spec(
        parsed, content, output_directory="/o", networks=mapped, default_network=default
    )
    assert spec.network_map["VM Network"].libvirt_network == "default"


def test_queues_default_to_hypersdks_directories() -> None:
    (pair,) = queues_of([], [], Path("/var/lib/hyper2kvm"))
    assert pair.queue == Path("/var/lib/hyper2kvm/queue")
    assert pair.output == Path("/var/lib/hyper2kvm/output")
    blue = instance_queue(Path("/b"), "blue")
    assert (blue.queue, blue.output) == (Path("/b/blue-queue"), Path("/b/blue-output"))


@pytest.mark.parametrize("options", [["relative=/o"], ["/q"], ["/q=/a", "/q=/b"]])
def test_bad_queue_options_are_refused(options: list[str]) -> None:
    with pytest.raises(MigrationProblem):
        queues_of(options, [])


def test_a_bad_instance_name_is_refused() -> None:
    with pytest.raises(MigrationProblem):
        instance_queue(Path("/b"), "../x")
