"""Submitting repair jobs to a real cluster and reading back what they did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from client.views import event_to_dict, job_to_dict
from devsupport.cluster import Cluster, wait_for
from devsupport.specs import job_spec

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def repair_spec(
    operation: str, image: Path, output: Path, *, actions: list[str] | None = None, **params: Any
) -> dict[str, Any]:
    """A v1 repair job: uncompressed qcow2 output unless ``params`` say otherwise."""
    parameters = {"output_format": "qcow2", "compress": False, **params}
    return job_spec(
        operation,
        image=image,
        image_format="vmdk" if image.suffix == ".vmdk" else image.suffix.lstrip("."),
        output=output,
        requested_actions=actions or [],
        parameters=parameters,
        capability_requirements={"needs_mount": True},
        execution_policy={"retry_count": 0, "timeout_seconds": 600},
    )


def job(cluster: Cluster, job_id: str) -> dict[str, Any]:
    with cluster.client() as client:
        return job_to_dict(client.get(job_id))


def events(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    with cluster.client() as client:
        return [event_to_dict(e) for e in client.events(job_id)]


def submit(cluster: Cluster, doc: dict[str, Any]) -> str:
    with cluster.client() as client:
        client.submit(doc)
    return str(doc["job_id"])


def run_job(cluster: Cluster, doc: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    """Submit and wait for the terminal state; returns the job as h2kctl shows it."""
    job_id = submit(cluster, doc)

    def finished() -> dict[str, Any] | None:
        current = job(cluster, job_id)
        return current if current["state"] in TERMINAL else None

    return wait_for(finished, timeout=timeout, interval=0.2, what=f"{job_id} to finish")


def report_of(output: Path, job_id: str) -> dict[str, Any]:
    return json.loads((output / f"{job_id}_report.json").read_text())


def action(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in report["actions"] if a["action"] == name)
