"""WatchJobBatches streams count toward the same per-client limit as WatchJob streams (real
control plane over mTLS; its roles are in test_roles.py's matrix)."""

from __future__ import annotations

import grpc

from devsupport.cluster import Cluster, wait_for
from devsupport.pki import ClusterPKI
from protocol.gen.h2k.v1 import services_pb2
from tests.security.conftest import MAX_STREAMS
from tests.security.test_roles import Stubs, _spec, _submit, connected


def _probe_batches(stubs: Stubs, job_id: str) -> tuple[grpc.StatusCode, str]:
    """Open a WatchJobBatches for a second; how did it end?"""
    request = services_pb2.WatchJobRequest(job_id=job_id)
    try:
        list(stubs.jobs.WatchJobBatches(request, timeout=1.0))
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_batch_streams_share_the_per_client_stream_limit(
    tls_cluster: Cluster, pki: ClusterPKI
) -> None:
    with connected(tls_cluster, pki, "admin") as admin:
        job_id = _submit(admin, _spec(tls_cluster, capability_requirements={"needs_nbd": True}))
    with connected(tls_cluster, pki, "vera") as vera:
        request = services_pb2.WatchJobRequest(job_id=job_id)
        streams: list = []

        def saturated() -> bool:
            # Streams start asynchronously: keep MAX_STREAMS WatchJob streams open until a
            # WatchJobBatches one more is refused.
            streams[:] = [stream for stream in streams if stream.running()]
            while len(streams) < MAX_STREAMS:
                streams.append(vera.jobs.WatchJob(request))
            return _probe_batches(vera, job_id)[0] is grpc.StatusCode.RESOURCE_EXHAUSTED

        wait_for(saturated, timeout=20, what="RESOURCE_EXHAUSTED for a batch stream too many")
        for stream in streams:
            stream.cancel()
    with connected(tls_cluster, pki, "admin") as admin:
        admin.jobs.CancelJob(services_pb2.CancelJobRequest(job_id=job_id), timeout=10)
