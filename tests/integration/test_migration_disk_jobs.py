"""A VM migration's disk jobs on a real agent: output_name, a disk read in place inside an OVA
(a tar made with ``tar``), verify_content, and the refusals."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agent.disk import qemu_img
from agent.errors import ToolFailed
from devsupport.cluster import Cluster
from devsupport.images import BuiltImage, build_image, compare
from devsupport.specs import job_spec
from tests.support.assertions import assert_gap_free_monotonic

MiB = 1 << 20


def _migration(output_name: str, **extra: Any) -> dict[str, Any]:
    return {"migration_id": "mig-1", "disk_id": "disk-0", "output_name": output_name, **extra}


def _run(cluster: Cluster, doc: dict[str, Any]) -> dict[str, Any]:
    run = cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=180)
    assert run.returncode in (0, 1), run.stdout + run.stderr
    return json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)


def _error(job: dict[str, Any]) -> tuple[str, str]:
    assert job["state"] == "FAILED", job["state"]
    return job["result"]["error"]["code"], job["result"]["error"]["message"]


def _events(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    out = cluster.h2kctl("events", job_id, "-o", "json", check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _ova(directory: Path, *disks: BuiltImage) -> tuple[Path, dict[str, tarfile.TarInfo]]:
    """An OVA made by ``tar`` (OVF first, then the disks) and where each member's data is."""
    (directory / "vm.ovf").write_text("<Envelope/>\n")
    ova = directory / "vm.ova"
    names = ["vm.ovf", *(d.path.name for d in disks)]
    subprocess.run(["tar", "-cf", str(ova), "-C", str(directory), *names], check=True)
    with tarfile.open(ova) as tar:
        return ova, {m.name: m for m in tar.getmembers()}


def _in_ova(member: tarfile.TarInfo) -> dict[str, int]:
    return {"source_offset": member.offset_data, "source_size": member.size}


def test_output_name_is_the_only_file_written(cluster: Cluster, images: Path, outdir: Path) -> None:
    source = build_image(images, "qcow2")
    doc = job_spec(
        image=source.path,
        image_format="qcow2",
        output=outdir,
        parameters={"compress": False, "migration": _migration(".vm-disk0.qcow2.h2k-mig-1")},
    )
    job = _run(cluster, doc)
    assert job["state"] == "COMPLETED", job
    output = outdir / ".vm-disk0.qcow2.h2k-mig-1"
    assert [o["path"] for o in job["result"]["outputs"]] == [str(output)]
    assert sorted(p.name for p in outdir.iterdir()) == [output.name]
    assert compare(source, output, "qcow2").returncode == 0


def test_an_existing_output_name_is_refused(cluster: Cluster, images: Path, outdir: Path) -> None:
    source = build_image(images, "qcow2")
    (outdir / "vm.qcow2").write_bytes(b"precious")
    doc = job_spec(
        image=source.path,
        image_format="qcow2",
        output=outdir,
        parameters={"migration": _migration("vm.qcow2")},
    )
    code, message = _error(_run(cluster, doc))
    assert code == "OUTPUT_EXISTS" and str(outdir / "vm.qcow2") in message
    assert (outdir / "vm.qcow2").read_bytes() == b"precious"


@pytest.mark.parametrize("variant", ["vmdk-streamOptimized", "vmdk-monolithicSparse"])
@pytest.mark.parametrize("image_format", ["vmdk", None])
def test_a_disk_inside_an_ova_converts_in_place(
    cluster: Cluster, images: Path, outdir: Path, variant: str, image_format: str | None
) -> None:
    # Two disks, so the second one starts deep inside the tar and the first one ends before
    # other data: both ends of the range matter. The first has other content (another size).
    first = build_image(images, "vmdk-streamOptimized", size=16 * MiB, stem="disk0")
    source = build_image(images, variant, stem="disk1")
    ova, members = _ova(images, first, source)
    before = ova.stat().st_mtime_ns
    doc = job_spec(
        image=ova,
        image_format=image_format,
        output=outdir,
        parameters={
            "compress": False,
            "migration": _migration("vm-disk1.qcow2", **_in_ova(members[source.path.name])),
        },
    )
    job = _run(cluster, doc)
    assert job["state"] == "COMPLETED", job
    output = outdir / "vm-disk1.qcow2"
    assert compare(source, output, "qcow2").returncode == 0
    assert job["result"]["metrics"]["virtual_size_bytes"] == source.virtual_size
    assert sorted(p.name for p in outdir.iterdir()) == [output.name]
    assert ova.stat().st_mtime_ns == before
    assert_gap_free_monotonic(_events(cluster, doc["job_id"]))


def test_a_range_beyond_the_end_of_the_file_fails_cleanly(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    source = build_image(images, "vmdk-streamOptimized", stem="disk0")
    ova, members = _ova(images, source)
    member = members[source.path.name]
    doc = job_spec(
        image=ova,
        output=outdir,
        parameters={
            "migration": _migration(
                "vm.qcow2", source_offset=member.offset_data, source_size=ova.stat().st_size
            )
        },
    )
    code, message = _error(_run(cluster, doc))
    assert code == "INVALID_SPEC"
    assert "parameters.migration.source_size" in message and "beyond the end" in message
    assert list(outdir.iterdir()) == []


def test_a_range_holding_a_split_vmdk_is_refused(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    split = build_image(images, "vmdk-twoGbMaxExtentSparse", stem="split")
    ova, members = _ova(images, split)
    doc = job_spec(
        image=ova,
        output=outdir,
        parameters={"migration": _migration("vm.qcow2", **_in_ova(members[split.path.name]))},
    )
    code, message = _error(_run(cluster, doc))
    assert code == "UNSAFE_IMAGE"
    assert "single-file monolithicSparse or streamOptimized" in message
    assert list(outdir.iterdir()) == []


def test_verify_content_passes_on_a_good_convert(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    source = build_image(images, "vmdk-streamOptimized", stem="disk0")
    ova, members = _ova(images, source)
    migration = _migration("vm.qcow2", verify_content=True, **_in_ova(members[source.path.name]))
    doc = job_spec(image=ova, output=outdir, parameters={"migration": migration})
    job = _run(cluster, doc)
    assert job["state"] == "COMPLETED", job
    events = _events(cluster, doc["job_id"])
    assert "verify" in [e.get("phase") for e in events]
    assert_gap_free_monotonic(events)
    assert compare(source, outdir / "vm.qcow2", "qcow2").returncode == 0


def test_inspect_refuses_migration_parameters(cluster: Cluster, images: Path, outdir: Path) -> None:
    source = build_image(images, "qcow2")
    doc = job_spec(
        "inspect",
        image=source.path,
        image_format="qcow2",
        output=outdir,
        parameters={"migration": _migration("vm.qcow2")},
    )
    code, message = _error(_run(cluster, doc))
    assert code == "INVALID_SPEC" and message.startswith("parameters.migration:")
    assert list(outdir.iterdir()) == []


def test_convert_refuses_attach_outputs(cluster: Cluster, images: Path, outdir: Path) -> None:
    source = build_image(images, "qcow2")
    attached = [{"disk_id": "d1", "path": str(outdir / "d1.qcow2"), "format": "qcow2"}]
    doc = job_spec(
        image=source.path,
        image_format="qcow2",
        output=outdir,
        parameters={"migration": _migration("vm.qcow2", attach_outputs=attached)},
    )
    code, message = _error(_run(cluster, doc))
    assert code == "INVALID_SPEC" and "parameters.migration.attach_outputs" in message


# The compare step itself, against real images (no cluster needed).


def _compare(a: qemu_img.ToolImage, fmt_a: str, b: Path, fmt_b: str) -> list[float]:
    seen: list[float] = []
    asyncio.run(qemu_img.compare(a, fmt_a, b, fmt_b, progress=seen.append, timeout=60))
    return seen


def test_compare_passes_for_equal_content_and_names_the_difference(tmp_path: Path) -> None:
    source = build_image(tmp_path / "a", "vmdk-streamOptimized", size=8 * MiB)
    same = tmp_path / "same.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(source.path), str(same)],
        check=True,
    )
    assert _compare(source.path, "vmdk", same, "qcow2")[-1] == 100.0
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 3M 4k", str(same)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with pytest.raises(qemu_img.ContentMismatch, match=r"Content mismatch at offset 3145728"):
        _compare(source.path, "vmdk", same, "qcow2")


def test_compare_of_a_byte_range(tmp_path: Path) -> None:
    source = build_image(tmp_path, "vmdk-monolithicSparse", size=8 * MiB, stem="disk0")
    ova, members = _ova(tmp_path, source)
    member = members[source.path.name]
    in_ova = qemu_img.source_filename(ova, qemu_img.ByteRange(member.offset_data, member.size))
    _compare(in_ova, "vmdk", source.path, "vmdk")
    other = build_image(tmp_path / "b", "vmdk-monolithicSparse", size=8 * MiB)
    subprocess.run(
        ["qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 512", str(other.path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with pytest.raises(qemu_img.ContentMismatch):
        _compare(in_ova, "vmdk", other.path, "vmdk")


def test_compare_that_cannot_read_an_image_is_a_tool_failure(tmp_path: Path) -> None:
    source = build_image(tmp_path, "qcow2", size=4 * MiB)
    with pytest.raises(ToolFailed) as caught:
        _compare(source.path, "qcow2", tmp_path / "missing.qcow2", "qcow2")
    assert not isinstance(caught.value, qemu_img.ContentMismatch)
