"""migration_publish and migration_cleanup on a real agent, driven through Worker.ExecuteJob.

SubmitJob refuses internal operations (the control plane makes them for VM migrations), so
these tests call the agent the way the control plane's dispatcher does. The cluster here has
its own control plane with a long heartbeat interval: a heartbeat reporting a job the control
plane never assigned would make it cancel that job as an orphan.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from devsupport.cluster import Cluster
from protocol.conversion import spec_to_proto, struct_to_dict
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc
from protocol.migration_jobs import staged_name
from protocol.spec import parse_spec

MIGRATION = "mig-1"
DOCUMENTS = {
    "vm.xml": "<domain type='kvm'><name>vm</name></domain>\n",
    "vm.kubevirt.yaml": "kind: VirtualMachine\nmetadata:\n  name: vm\n",
    "vm.report.json": json.dumps({"migration": MIGRATION, "disks": 2}) + "\n",
}
KINDS = {"vm.xml": "definition", "vm.kubevirt.yaml": "definition", "vm.report.json": "report"}


@pytest.fixture(scope="module")
def quiet_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("publish-cluster"))
    try:
        cluster.start_controlplane("--heartbeat-interval", "600", "--lease-seconds", "1200")
        cluster.start_agent("node-1")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def out(quiet_cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    d = quiet_cluster.output_dir / request.node.name
    d.mkdir()
    return d


def _staged(final: str) -> str:
    return staged_name(MIGRATION, final)


def _qcow2(path: Path, size: str = "4M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path


def _execute(cluster: Cluster, operation: str, out: Path, migration: dict[str, Any]) -> list:
    doc = {
        "job_id": f"{operation.replace('_', '-')}-{uuid.uuid4().hex[:8]}",
        "operation": operation,
        "image": {"path": str(out / _staged("vm.qcow2")), "format": "qcow2"},
        "artifacts": {"output_path": str(out)},
        "audit": {"requested_by": "tests"},
        "parameters": {"migration": {"migration_id": MIGRATION, **migration}},
    }
    request = services_pb2.ExecuteJobRequest(
        spec=spec_to_proto(parse_spec(doc)), attempt=1, start_seq=1
    )
    with grpc.insecure_channel(cluster.agent_addresses["node-1"]) as channel:
        stub = services_pb2_grpc.WorkerStub(channel)
        return list(stub.ExecuteJob(request, timeout=60))


def _migration_files(out: Path, create: bool = True) -> dict[str, Any]:
    """Two staged qcow2 disks (the boot disk last) and three documents."""
    if create:
        _qcow2(out / _staged("vm-disk2.qcow2"))
        _qcow2(out / _staged("vm.qcow2"))
    files = [{"staged": _staged(n), "final": n, "kind": KINDS[n]} for n in DOCUMENTS]
    files.insert(
        0,
        {
            "staged": _staged("vm-disk2.qcow2"),
            "final": "vm-disk2.qcow2",
            "kind": "disk",
            "format": "qcow2",
        },
    )
    files.append(
        {"staged": _staged("vm.qcow2"), "final": "vm.qcow2", "kind": "disk", "format": "qcow2"}
    )
    return {"files": files, "documents": {_staged(n): c for n, c in DOCUMENTS.items()}}


def _renamed(events: list) -> list[str]:
    return [e.message.rsplit(" to ", 1)[1] for e in events if e.phase == "publish"]


def test_publish_renames_every_file_boot_disk_last(quiet_cluster: Cluster, out: Path) -> None:
    events = _execute(quiet_cluster, "migration_publish", out, _migration_files(out))
    final = events[-1]
    assert final.state == job_pb2.JOB_STATE_COMPLETED, final.result.error.message
    finals = ["vm-disk2.qcow2", *DOCUMENTS, "vm.qcow2"]
    assert sorted(os.listdir(out)) == sorted(finals), "staged and temporary names are gone"
    assert _renamed(events) == finals
    for name, content in DOCUMENTS.items():
        assert (out / name).read_text() == content
    outputs = {Path(o.path).name: (o.kind, o.format, o.size_bytes) for o in final.result.outputs}
    assert outputs["vm.qcow2"] == ("image", "qcow2", (out / "vm.qcow2").stat().st_size)
    assert outputs["vm.xml"][:2] == ("definition", "xml")
    assert outputs["vm.report.json"][:2] == ("report", "json")

    # A retry of a completed publish checks the disks again and succeeds, renaming nothing.
    again = _execute(quiet_cluster, "migration_publish", out, _migration_files(out, create=False))
    assert again[-1].state == job_pb2.JOB_STATE_COMPLETED, again[-1].result.error.message
    assert _renamed(again) == []
    details = struct_to_dict(again[-1].result.details)
    assert details["already_published"] == finals and details["published"] == []


def test_publish_resumes_after_a_crash_mid_way(quiet_cluster: Cluster, out: Path) -> None:
    migration = _migration_files(out)
    # An earlier attempt renamed the data disk, then the agent died.
    os.rename(out / _staged("vm-disk2.qcow2"), out / "vm-disk2.qcow2")
    events = _execute(quiet_cluster, "migration_publish", out, migration)
    assert events[-1].state == job_pb2.JOB_STATE_COMPLETED, events[-1].result.error.message
    assert _renamed(events) == [*DOCUMENTS, "vm.qcow2"]


def test_an_existing_final_fails_before_any_rename(quiet_cluster: Cluster, out: Path) -> None:
    migration = _migration_files(out)
    (out / "vm.xml").write_text("someone else's domain")
    before = sorted(os.listdir(out))
    events = _execute(quiet_cluster, "migration_publish", out, migration)
    error = events[-1].result.error
    assert events[-1].state == job_pb2.JOB_STATE_FAILED
    assert error.code == "OUTPUT_EXISTS" and "vm.xml" in error.message
    assert sorted(os.listdir(out)) == before
    assert (out / "vm.xml").read_text() == "someone else's domain"


def test_a_corrupt_disk_fails_before_any_rename(quiet_cluster: Cluster, out: Path) -> None:
    migration = _migration_files(out)
    with open(out / _staged("vm-disk2.qcow2"), "r+b") as disk:
        disk.seek(20)  # the cluster_bits field of the qcow2 header
        disk.write(b"\xff\xff\xff\xff")
    events = _execute(quiet_cluster, "migration_publish", out, migration)
    error = events[-1].result.error
    assert events[-1].state == job_pb2.JOB_STATE_FAILED
    assert error.code == "INVALID_IMAGE" and "vm-disk2.qcow2" in error.message
    assert not [n for n in os.listdir(out) if not n.startswith(".")], "no final name appeared"


def test_a_staged_symlink_is_refused(quiet_cluster: Cluster, out: Path) -> None:
    migration = _migration_files(out)
    target = out / _staged("vm.qcow2")
    target.unlink()
    target.symlink_to(_qcow2(quiet_cluster.input_dir / f"{out.name}.qcow2"))
    events = _execute(quiet_cluster, "migration_publish", out, migration)
    assert events[-1].result.error.code == "PATH_NOT_ALLOWED"
    assert not [n for n in os.listdir(out) if not n.startswith(".")]


def test_output_outside_allow_output_is_refused(quiet_cluster: Cluster, tmp_path: Path) -> None:
    migration = _migration_files(tmp_path)
    events = _execute(quiet_cluster, "migration_publish", tmp_path, migration)
    error = events[-1].result.error
    assert error.code == "PATH_NOT_ALLOWED" and "outside the allowed output" in error.message
    assert not [n for n in os.listdir(tmp_path) if not n.startswith(".")]


def test_cleanup_removes_exactly_the_listed_staged_files(quiet_cluster: Cluster, out: Path) -> None:
    disk = _qcow2(out / _staged("vm.qcow2"))
    (out / _staged("vm.xml")).write_text("<domain/>")
    (out / f".{_staged('vm-disk2.qcow2')}.h2k-tmp-convert-1").write_bytes(b"partial")
    unlisted = out / _staged("vm.report.json")
    unlisted.write_text("{}")
    precious = quiet_cluster.input_dir / f"{out.name}-precious.qcow2"
    precious.write_bytes(b"keep me")
    (out / _staged("vm-disk2.qcow2")).symlink_to(precious)
    (out / _staged("vm.kubevirt.yaml")).mkdir()
    listed = [_staged(n) for n in ("vm.qcow2", "vm.xml", "vm-disk2.qcow2", "vm.kubevirt.yaml")]
    listed += [_staged("vm-disk3.qcow2"), "vm.qcow2"]

    events = _execute(quiet_cluster, "migration_cleanup", out, {"staged": listed})
    assert events[-1].state == job_pb2.JOB_STATE_COMPLETED, events[-1].result.error.message
    details = struct_to_dict(events[-1].result.details)
    assert details["removed"] == [
        disk.name,
        _staged("vm.xml"),
        f".{_staged('vm-disk2.qcow2')}.h2k-tmp-convert-1",
    ]
    assert details["absent"] == [_staged("vm-disk3.qcow2")]
    skipped = {s["name"]: s["reason"] for s in details["skipped"]}
    assert skipped == {
        _staged("vm-disk2.qcow2"): "a symlink",
        _staged("vm.kubevirt.yaml"): "a directory",
        "vm.qcow2": f"not a staged name of migration {MIGRATION}",
    }
    assert unlisted.exists() and precious.read_bytes() == b"keep me"
    assert (out / _staged("vm-disk2.qcow2")).is_symlink()

    # Cleaning up again (a retry) is success: what was removed is absent now.
    again = _execute(quiet_cluster, "migration_cleanup", out, {"staged": listed[:2]})
    assert struct_to_dict(again[-1].result.details)["absent"] == listed[:2]
