"""Free space: judged by what the output really needs; a disk filling mid-write fails cleanly.

Each test has an ext4 file system of its own (a loop-mounted image) inside the agent's output
allow-list, so "full" is real and nothing else on the machine is affected.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devsupport.specs import job_spec
from tests.support.faults import FaultCluster, temporary_files
from tests.support.small_fs import fill, small_filesystem

HYPER_V_DEFAULT_SIZE = "127G"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    cluster = FaultCluster(tmp_path_factory.mktemp("space"))
    try:
        cluster.start_controlplane()
        cluster.start_agent("node-1")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def small(cluster: FaultCluster, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A 300 MiB file system mounted inside the agent's output directory."""
    name = request.node.name.replace("[", "_").replace("]", "")
    with small_filesystem(
        cluster.workdir / f"{name}.ext4", cluster.output_dir / name, mib=300
    ) as mountpoint:
        yield mountpoint


def _hyper_v_default_disk(path: Path) -> None:
    """A 127 GiB dynamic VHD (Hyper-V's default size) holding 256 KiB of data."""
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=dynamic",
            str(path),
            HYPER_V_DEFAULT_SIZE,
        ],
        check=True,
    )
    subprocess.run(
        ["qemu-io", "-f", "vpc", "-c", "write -P 0x5a 1M 256k", str(path)],
        check=True,
        capture_output=True,
    )


def _convert(cluster: FaultCluster, source: Path, output: Path, job_id: str, **params: object):
    return job_spec(
        image=source,
        image_format="vhd",
        output=output,
        job_id=job_id,
        parameters={"output_format": "qcow2", **params},
        execution_policy={"retry_count": 0, "timeout_seconds": 600},
    )


def test_large_sparse_vhd_converts_into_a_small_file_system(
    cluster: FaultCluster, small: Path
) -> None:
    source = cluster.input_dir / "hyperv-default.vhd"
    _hyper_v_default_disk(source)
    cluster.submit(_convert(cluster, source, small, "space-sparse"))
    cluster.wait_state("space-sparse", "COMPLETED", timeout=120)
    output = small / "hyperv-default.qcow2"
    same = subprocess.run(
        ["qemu-img", "compare", "-f", "vpc", "-F", "qcow2", str(source), str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert same.returncode == 0, same.stdout + same.stderr


def test_output_that_cannot_fit_is_refused_before_writing(
    cluster: FaultCluster, small: Path, slow_source: Path
) -> None:
    os.link(slow_source, cluster.input_dir / "big.img")
    filler = fill(small, keep_bytes=64 << 20)  # 64 MiB left for 256 MiB of random data
    doc = _convert(cluster, cluster.input_dir / "big.img", small, "space-refused", compress=False)
    doc["image"]["format"] = "raw"
    cluster.submit(doc)
    job = cluster.wait_state("space-refused", "FAILED", timeout=60)
    error = job.result.error
    assert error.code == "OUT_OF_SPACE"
    assert error.phase == "inspect"
    assert "artifacts.output_path" in error.message and "qemu-img measure" in error.message
    assert sorted(p.name for p in small.iterdir()) == sorted(["lost+found", filler.name])


def test_disk_filling_mid_conversion_fails_cleanly(
    cluster: FaultCluster, small: Path, slow_source: Path
) -> None:
    os.link(slow_source, cluster.input_dir / "slow-fill.img")
    doc = cluster.convert_spec("space-filled", source="slow-fill.img", output=small)
    cluster.submit(doc)
    cluster.wait_progress("space-filled", 3)
    fill(small)
    job = cluster.wait_state("space-filled", "FAILED", timeout=120)
    error = job.result.error
    assert error.code == "OUT_OF_SPACE", error.message
    assert "filled up" in error.message
    assert not (small / "slow-fill.qcow2").exists()
    assert temporary_files(small) == []
    # The agent is healthy: once there is room again, the next job on that disk completes.
    (small / "filler.bin").unlink()
    source = cluster.input_dir / "after-full.vhd"
    _hyper_v_default_disk(source)
    cluster.submit(_convert(cluster, source, small, "space-after"))
    cluster.wait_state("space-after", "COMPLETED", timeout=120)
