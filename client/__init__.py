"""A typed Python client of the h2k control plane.

from client import H2KClient

with H2KClient("127.0.0.1:50051") as h2k:
    job_id = h2k.submit(spec_dict).job.spec.job_id
    for event in h2k.watch(job_id):
        ...
"""

from __future__ import annotations

from client.client import H2KClient, SubmitResult
from client.watch import ReconnectPolicy

__all__ = ["H2KClient", "ReconnectPolicy", "SubmitResult"]
