"""Cancel of a running convert leaves no output, no temporary file and no qemu-img process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil

from devsupport.cluster import Cluster, wait_for
from devsupport.images import write_random_raw
from devsupport.specs import job_spec

MiB = 1 << 20


def _qemu_img_writing_to(directory: Path) -> list[int]:
    # The agent hands qemu-img pinned /proc/<pid>/fd/<n> paths: look at its open files.
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if not cmd or "qemu-img" not in os.path.basename(cmd[0]):
            continue
        try:
            if any(str(directory) in f.path for f in proc.open_files()):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_cancel_running_convert_cleans_up(cluster: Cluster, images: Path, outdir: Path) -> None:
    source = images / "big.img"
    write_random_raw(source, 768)  # compressing it takes several seconds
    doc = job_spec(
        image=source,
        image_format="raw",
        output=outdir,
        parameters={"output_format": "qcow2", "compress": True},
    )
    cluster.h2kctl("submit", str(cluster.write_job(doc)), check=True)

    def progressing() -> bool:
        job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
        assert job["state"] not in ("COMPLETED", "FAILED"), "finished before it could be cancelled"
        return job["state"] == "PROGRESSING" and job.get("progress_percent", 0) > 3

    wait_for(progressing, timeout=60, what="conversion under way")
    assert _qemu_img_writing_to(outdir), "no qemu-img process found while converting"
    cluster.h2kctl("cancel", doc["job_id"], check=True)

    def cancelled() -> dict | None:
        job = json.loads(cluster.h2kctl("get", doc["job_id"], "-o", "json", check=True).stdout)
        return job if job["state"] == "CANCELLED" else None

    job = wait_for(cancelled, timeout=30, what="CANCELLED")
    assert job["result"]["error"]["code"] == "CANCELLED"
    assert list(outdir.iterdir()) == []
    assert wait_for(lambda: not _qemu_img_writing_to(outdir), timeout=10, what="no qemu-img")
    watch = cluster.h2kctl("watch", doc["job_id"])
    assert watch.returncode == 1
