"""A source cut short (an interrupted copy or export) is never a success: the job fails
INVALID_IMAGE naming the table entry past the end, without a retry or an output, while the
whole file still converts content-identical; and a property test cuts random lengths from a
valid image of each format: the check refuses it, or it reads exactly as the source does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.disk.image_safety import safe_input
from agent.errors import InvalidImage, UnsafeImage
from agent.ops.image import check_size_bytes
from agent.paths import PathPolicy, pinned_input
from devsupport.cluster import Cluster
from devsupport.images import VARIANTS, BuiltImage, build_image, compare
from devsupport.specs import job_spec

MiB = 1 << 20
GiB = 1 << 30


def _run(cluster: Cluster, doc: dict[str, Any]) -> dict[str, Any]:
    cluster.h2kctl("submit", str(cluster.write_job(doc)), "--watch", timeout=180)
    return dict(json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout))


def _data_file(image: BuiltImage) -> Path:
    """The file that holds the data: the image, or a split VMDK's (first) extent."""
    if image.path.read_bytes()[:4] == b"# Di":
        return sorted(image.path.parent.glob(f"{image.path.stem}-s*.vmdk"))[0]
    return image.path


def _copy(image: BuiltImage, directory: Path) -> BuiltImage:
    directory.mkdir(parents=True, exist_ok=True)
    for part in image.path.parent.glob(f"{image.path.stem}*"):
        shutil.copy(part, directory / part.name)
    return BuiltImage(
        directory / image.path.name, image.qemu_format, image.v1_format, image.virtual_size
    )


def _job(image: BuiltImage, output: Path) -> dict[str, Any]:
    doc = job_spec(
        image=image.path,
        image_format=image.v1_format,
        output=output,
        parameters={"compress": False},
    )
    if image.qemu_format == "raw":
        doc["image"]["size_bytes"] = image.virtual_size
    return doc


def _assert_refused_without_retry(job: dict[str, Any], outdir: Path, says: str) -> None:
    assert job["state"] == "FAILED", job
    error = job["result"]["error"]
    assert error["code"] == "INVALID_IMAGE", error
    assert says in error["message"], error["message"]
    assert "RETRYING" not in [t["to"] for t in job["history"]]
    assert list(outdir.iterdir()) == []


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_cut_source_fails_invalid_image_and_the_whole_one_converts_identical(
    cluster: Cluster, images: Path, outdir: Path, variant: str
) -> None:
    source = build_image(images / "whole", variant)
    whole = _run(cluster, _job(source, outdir))
    assert whole["state"] == "COMPLETED", whole
    assert compare(source, outdir / f"{source.path.stem}.qcow2", "qcow2").returncode == 0
    for cut in ("half", "one-byte"):
        copy = _copy(source, images / cut)
        data = _data_file(copy)
        size = data.stat().st_size
        os.truncate(data, size // 2 if cut == "half" else size - 1)
        out = outdir / cut
        out.mkdir()
        says = "image.size_bytes" if copy.qemu_format == "raw" else "the file looks truncated"
        _assert_refused_without_retry(_run(cluster, _job(copy, out)), out, says)
    assert cluster.ready_agents() == {"node-1"}


def _split_vmdk(directory: Path) -> BuiltImage:
    """A 5 GiB twoGbMaxExtentSparse VMDK (three extents), data in each extent."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / ".split.raw"
    with open(raw, "wb") as f:
        f.truncate(5 * GiB)
        for offset in (100 * MiB, int(2.5 * GiB), int(4.5 * GiB)):
            f.seek(offset)
            f.write(os.urandom(MiB))
    target = directory / "split.vmdk"
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=twoGbMaxExtentSparse",
            str(raw),
            str(target),
        ],
        check=True,
        timeout=300,
    )
    raw.unlink()
    return BuiltImage(target, "vmdk", "vmdk", 5 * GiB)


def test_a_split_vmdk_whose_middle_extent_is_cut_names_that_extent(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    source = _split_vmdk(images)
    middle = images / "split-s002.vmdk"
    os.truncate(middle, middle.stat().st_size // 2)
    job = _run(cluster, _job(source, outdir))
    _assert_refused_without_retry(job, outdir, "extent 2 (split-s002.vmdk): grain table")


def test_a_raw_source_is_checked_against_size_bytes_or_said_unverified(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    source = build_image(images, "raw", size=8 * MiB)
    wrong = _job(source, outdir)
    wrong["image"]["size_bytes"] = 16 * MiB
    job = _run(cluster, wrong)
    _assert_refused_without_retry(job, outdir, "image.size_bytes: ")
    assert "not the 16777216 bytes the job gives" in job["result"]["error"]["message"]
    unsized = _job(source, outdir)
    del unsized["image"]["size_bytes"]
    assert _run(cluster, unsized)["state"] == "COMPLETED"
    events = cluster.h2kctl("events", unsized["job_id"], "-o", "json", check=True).stdout
    assert "the size of the raw image was not verified" in events


def test_a_differencing_vhd_is_refused_before_qemu_reads_it(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    from tests.support.layouts import vhd_dynamic

    child = images / "child.vhd"
    child.write_bytes(vhd_dynamic(8 * MiB, {0: os.urandom(2 * MiB)}, parent="base.vhd"))
    job = _run(cluster, job_spec(image=child, image_format="vhd", output=outdir))
    assert job["state"] == "FAILED"
    assert job["result"]["error"]["code"] == "UNSAFE_IMAGE"
    assert "differencing VHD (footer disk type 4)" in job["result"]["error"]["message"]
    assert list(outdir.iterdir()) == []


# --- property: a cut is refused, or reads exactly like the source ---------------------

PROPERTY_SIZE = 8 * MiB


@pytest.fixture(scope="module")
def valid_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltImage]:
    directory = tmp_path_factory.mktemp("valid")
    return {v: build_image(directory / v, v, size=PROPERTY_SIZE) for v in VARIANTS}


def _accepted(image: BuiltImage) -> bool:
    """Whether the agent's checks (before qemu-img) accept the image."""
    policy = PathPolicy([image.path.parent], [image.path.parent])
    try:
        with pinned_input(policy, image.path) as pinned:
            if image.qemu_format == "raw":
                check_size_bytes(image.virtual_size, pinned.st.st_size, str(image.path))
            with safe_input(policy, pinned, image.qemu_format, image.path.parent / ".scratch"):
                return True
    except (InvalidImage, UnsafeImage):
        return False


@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_a_cut_at_any_length_is_refused_or_reads_as_the_source(
    valid_images: dict[str, BuiltImage], tmp_path: Path, variant: str, fraction: float
) -> None:
    source = valid_images[variant]
    work = tmp_path / f"cut-{os.urandom(4).hex()}"
    copy = _copy(source, work)
    data = _data_file(copy)
    os.truncate(data, int(data.stat().st_size * fraction))
    if not _accepted(copy):
        return
    # Accepted: qemu-img must read it exactly as the source, or fail (the job would FAIL).
    run = subprocess.run(
        [
            "qemu-img",
            "compare",
            "-f",
            source.qemu_format,
            "-F",
            source.qemu_format,
            str(source.path),
            str(copy.path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 1, f"accepted a cut {variant} that reads differently: {run.stdout}"
    shutil.rmtree(work)


@pytest.mark.parametrize(("size_bytes", "says"), [(None, "not verified"), (8 * MiB, "size_bytes")])
def test_inspect_says_how_a_raw_source_was_proved_whole(
    cluster: Cluster, images: Path, outdir: Path, size_bytes: int | None, says: str
) -> None:
    source = build_image(images, "raw", size=8 * MiB)
    doc = job_spec("inspect", image=source.path, image_format="raw", output=outdir)
    if size_bytes is not None:
        doc["image"]["size_bytes"] = size_bytes
    job = _run(cluster, doc)
    assert job["state"] == "COMPLETED", job
    assert job["result"]["details"]["source_size_check"] == says


def test_an_image_qemu_img_refuses_is_an_image_problem_not_retried(
    cluster: Cluster, images: Path, outdir: Path
) -> None:
    source = build_image(images, "qcow2", size=8 * MiB)
    with open(source.path, "r+b") as f:
        f.seek(96)  # refcount_order: 7 (128-bit refcounts) is beyond what the format allows
        f.write((7).to_bytes(4, "big"))
    job = _run(cluster, _job(source, outdir))
    _assert_refused_without_retry(job, outdir, "an image problem: not retried")
    assert "qemu-img info" in job["result"]["error"]["message"]
