"""Repairs in an overlay over the read-only source, space reclaim, one copy pass.

The guests carry the blocks of a large file they deleted (written and removed through a loop
mount before the disk became a VMDK), and a chroot-able ``update-initramfs`` (this machine's
``sh`` and ``mkdir`` with their libraries) that leaves stray files in /run, /tmp and /var/tmp
as blkid and a killed rebuild do. Each output is read back independently: every file of the
guest is hashed in the source and in the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devsupport.cluster import Cluster
from devsupport.specs import job_spec
from tests.support.guests import (
    GuestDisk,
    Link,
    Program,
    Tree,
    build_debian_like,
    host_programs,
    opened_readonly,
)
from tests.support.repair_checks import is_clean, leftovers, sha256
from tests.support.repair_jobs import action, events, repair_spec, report_of, run_job

MiB = 1024 * 1024
GARBAGE_MIB = 96
STRAY_SCRIPT = """#!/bin/sh
# Stands in for update-initramfs: blkid's cache and scratch files, as the real one leaves.
mkdir -p /run/blkid
echo 'cache' > /run/blkid/blkid.tab
echo 'scratch' > /tmp/mkinitramfs-stray
echo 'scratch' > /var/tmp/mkinitramfs-stray
"""


def _guest_tools(script: str) -> Tree:
    return {
        **host_programs("sh", "mkdir"),
        "/bin/sh": Link("/usr/bin/sh"),
        "/usr/sbin/update-initramfs": Program(script.encode()),
        "/run/": "",
        "/tmp/": "",
        "/var/tmp/": "",
    }


@dataclass(frozen=True)
class Guests:
    garbage: GuestDisk  # a deleted file's blocks in its root file system, stray-leaving tool
    failing: GuestDisk  # its update-initramfs fails
    sha: dict[Path, str]


@pytest.fixture(scope="module")
def guests(repair_cluster: Cluster) -> Guests:
    directory = repair_cluster.input_dir / "overlay-guests"
    directory.mkdir()
    garbage = build_debian_like(
        directory,
        "garbage-guest",
        garbage_mib=GARBAGE_MIB,
        size_mib=256,
        extra=_guest_tools(STRAY_SCRIPT),
    )
    failing = build_debian_like(
        directory, "failing-guest", extra=_guest_tools("#!/bin/sh\necho broken >&2\nexit 3\n")
    )
    return Guests(garbage, failing, {g.path: sha256(g.path) for g in (garbage, failing)})


def _digest_tree(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a regular file's sha256, a link's target, a dir's mode."""
    found: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            guest = "/" + str(path.relative_to(root))
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                found[guest] = "link:" + os.readlink(path)
            elif stat.S_ISREG(mode):
                found[guest] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[guest] = f"mode:{oct(mode)}"
    return found


def _root_files(image: Path, fmt: str, scratch: Path) -> dict[str, str]:
    scratch.mkdir(parents=True, exist_ok=True)
    with opened_readonly(image, fmt, scratch) as disk:
        return _digest_tree(disk.mounts[1])


def _differing(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def _allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def _data_bytes(image: Path, fmt: str) -> int:
    argv = ["qemu-img", "map", "--output=json", "-f", fmt, str(image)]
    entries = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    return sum(e["length"] for e in entries if e["data"] and not e["zero"])


def _phases(cluster: Cluster, job_id: str) -> list[str]:
    progressing = [e for e in events(cluster, job_id) if e["state"] == "PROGRESSING"]
    return list(dict.fromkeys(e["phase"] for e in progressing))


def _assert_node_clean(cluster: Cluster) -> None:
    assert is_clean(cluster.workdir), leftovers(cluster.workdir)
    state = cluster.workdir / "node-1"
    assert not list(state.glob("tmp/*/overlay.qcow2")), "an overlay was left behind"
    journal = state / "attachments"
    assert not journal.exists() or not list(journal.iterdir())


def _assert_sources_unchanged(guests: Guests) -> None:
    for path, digest in guests.sha.items():
        assert sha256(path) == digest, f"{path} was modified"


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_repair_reclaims_the_deleted_blocks_and_changes_only_what_it_reports(
    repair_cluster: Cluster, guests: Guests, outdir: Path, scratch: Path
) -> None:
    doc = repair_spec("offline_fix", guests.garbage.path, outdir)
    result = run_job(repair_cluster, doc, timeout=300)
    assert result["state"] == "COMPLETED", result["result"]
    output = outdir / "garbage-guest.qcow2"
    report = report_of(outdir, doc["job_id"])
    steps = action(report, "virtio_initramfs")["steps"]
    assert steps[0]["status"] == "applied", steps  # the guest's tool ran in the chroot

    # Nothing of the guest changed but what the report lists: no blkid cache, no scratch.
    before = _root_files(guests.garbage.path, "vmdk", scratch / "source")
    after = _root_files(output, "qcow2", scratch / "output")
    assert _differing(before, after) == {f["path"] for f in report["files"]}
    for stray in ("/run/blkid", "/tmp/mkinitramfs-stray", "/var/tmp/mkinitramfs-stray"):
        assert stray not in after, f"{stray} was left in the guest"

    # The deleted file's blocks are gone from the output.
    reclaim = report["space_reclaim"]
    root = next(fs for fs in reclaim["filesystems"] if fs["mountpoint"] == "/")
    assert root["status"] == "trimmed", root
    assert root["discarded_bytes"] > GARBAGE_MIB * MiB
    assert root["reclaimed_bytes"] > (GARBAGE_MIB - 8) * MiB, root
    assert reclaim["reclaimed_bytes"] >= root["reclaimed_bytes"]
    assert root["source_data_bytes"] - root["kept_data_bytes"] == root["reclaimed_bytes"]
    # The kept figure is what the copy read: the output holds no more data than that.
    assert _data_bytes(output, "qcow2") <= reclaim["kept_data_bytes"]
    assert reclaim["source_data_bytes"] == _data_bytes(guests.garbage.path, "vmdk")
    assert _allocated(output) < _allocated(guests.garbage.path) - (GARBAGE_MIB - 8) * MiB
    assert result["result"]["metrics"]["reclaimed_bytes"] == reclaim["reclaimed_bytes"]

    # Repaired and trimmed first, then one copy.
    phases = _phases(repair_cluster, doc["job_id"])
    assert phases.index("trim") < phases.index("detach") < phases.index("convert")
    assert phases[-2:] == ["convert", "finalize"]
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)


def test_sparsify_false_keeps_every_block(
    repair_cluster: Cluster, guests: Guests, outdir: Path, scratch: Path
) -> None:
    doc = repair_spec("boot_repair", guests.garbage.path, outdir, sparsify=False)
    result = run_job(repair_cluster, doc, timeout=300)
    assert result["state"] == "COMPLETED", result["result"]
    output = outdir / "garbage-guest.qcow2"
    report = report_of(outdir, doc["job_id"])
    assert report["space_reclaim"] == {
        "enabled": False,
        "reason": "parameters.sparsify is false: every block is kept",
    }
    assert "trim" not in _phases(repair_cluster, doc["job_id"])
    assert _allocated(output) > GARBAGE_MIB * MiB  # the deleted file's blocks are still there
    before = _root_files(guests.garbage.path, "vmdk", scratch / "source")
    after = _root_files(output, "qcow2", scratch / "output")
    assert _differing(before, after) == {f["path"] for f in report["files"]}
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)


def test_a_failed_repair_costs_no_copy(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    doc = repair_spec("initramfs_regenerate", guests.failing.path, outdir)
    result = run_job(repair_cluster, doc, timeout=300)
    assert result["state"] == "FAILED", result["result"]
    error = result["result"]["error"]
    assert "repair actions failed: virtio_initramfs" in error["message"], error
    # The report says why; no image, no temporary file; qemu-img convert never ran.
    assert sorted(p.name for p in outdir.iterdir()) == [f"{doc['job_id']}_report.json"]
    assert "convert" not in _phases(repair_cluster, doc["job_id"])
    report = report_of(outdir, doc["job_id"])
    assert report["image"]["repaired"] is None
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)


def test_store_fixed_image_false_writes_the_report_only(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    doc = repair_spec("boot_repair", guests.garbage.path, outdir)
    doc["artifacts"]["store_fixed_image"] = False
    result = run_job(repair_cluster, doc, timeout=300)
    assert result["state"] == "COMPLETED", result["result"]
    assert sorted(p.name for p in outdir.iterdir()) == [f"{doc['job_id']}_report.json"]
    phases = _phases(repair_cluster, doc["job_id"])
    assert "convert" not in phases and "trim" not in phases, phases
    report = report_of(outdir, doc["job_id"])
    assert report["store_fixed_image"] is False and report["image"]["repaired"] is None
    assert action(report, "fstab_uuid")["status"] == "applied"  # in the overlay, then dropped
    assert result["result"]["outputs"] == [
        o for o in result["result"]["outputs"] if o["kind"] == "report"
    ]
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)


def test_store_fixed_image_false_with_in_place_is_refused(
    repair_cluster: Cluster, guests: Guests, outdir: Path
) -> None:
    doc = repair_spec("boot_repair", guests.garbage.path, outdir, in_place=True)
    doc["artifacts"]["store_fixed_image"] = False
    result = run_job(repair_cluster, doc)
    assert result["state"] == "FAILED"
    error = result["result"]["error"]
    assert error["code"] == "INVALID_SPEC", error
    assert error["message"].startswith("artifacts.store_fixed_image: false cannot be combined")
    assert list(outdir.iterdir()) == []


def _convert_spec(image: Path, output: Path, **parameters: object) -> dict:
    return job_spec(
        "convert",
        image=image,
        image_format="vmdk",
        output=output,
        parameters={"output_format": "qcow2", "compress": False, **parameters},
        capability_requirements={"needs_mount": True},
        execution_policy={"retry_count": 0, "timeout_seconds": 600},
    )


def test_convert_with_sparsify_keeps_every_file_and_drops_the_garbage(
    repair_cluster: Cluster, guests: Guests, outdir: Path, scratch: Path
) -> None:
    doc = _convert_spec(guests.garbage.path, outdir, sparsify=True)
    result = run_job(repair_cluster, doc, timeout=300)
    assert result["state"] == "COMPLETED", result["result"]
    output = outdir / "garbage-guest.qcow2"
    before = _root_files(guests.garbage.path, "vmdk", scratch / "source")
    after = _root_files(output, "qcow2", scratch / "output")
    assert before == after  # every file hashes the same
    reclaim = result["result"]["details"]["space_reclaim"]
    by_partition = {fs["partition"]: fs for fs in reclaim["filesystems"]}
    assert by_partition[1]["status"] == "trimmed"
    assert by_partition[1]["reclaimed_bytes"] > (GARBAGE_MIB - 8) * MiB
    assert by_partition[2]["status"] == "skipped"  # swap is kept as it is
    assert _allocated(output) < _allocated(guests.garbage.path) - (GARBAGE_MIB - 8) * MiB
    _assert_sources_unchanged(guests)
    _assert_node_clean(repair_cluster)


@pytest.mark.parametrize(
    ("parameters", "requirements", "message"),
    [
        ({"sparsify": "yes"}, {"needs_mount": True}, "parameters.sparsify: must be true or false"),
        ({"sparsify": True}, {"needs_mount": False}, "parameters.sparsify: trimming mounts"),
    ],
)
def test_convert_refuses_a_sparsify_it_cannot_honour(
    repair_cluster: Cluster,
    guests: Guests,
    outdir: Path,
    parameters: dict,
    requirements: dict,
    message: str,
) -> None:
    doc = _convert_spec(guests.garbage.path, outdir, **parameters)
    doc["capability_requirements"] = requirements
    result = run_job(repair_cluster, doc)
    assert result["state"] == "FAILED"
    error = result["result"]["error"]
    assert error["code"] == "INVALID_SPEC" and error["message"].startswith(message), error
    assert list(outdir.iterdir()) == []
