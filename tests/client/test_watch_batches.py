"""H2KClient.watch over WatchJobBatches (several events per message), against a JobService
double whose batch streams break; and its fallback to WatchJob on an older control plane."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest

from client import H2KClient, ReconnectPolicy
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc
from tests.support.job_service_double import FakeJobService, convert_events

FAST = ReconnectPolicy(initial_backoff=0.01, max_backoff=0.05, max_total_wait=3.0)


@dataclass
class BatchingJobService(FakeJobService):
    """The double, with WatchJobBatches sending ``batch_size`` events per message."""

    batch_size: int = 3
    batch_after_seqs: list[int] = field(default_factory=list)

    def WatchJobBatches(self, request, context):
        self.batch_after_seqs.append(request.after_seq)
        # The same scripted events and failures as WatchJob, grouped into messages.
        watch = self.WatchJob(request, context)
        batch: list[job_pb2.ProgressEvent] = []
        for event in watch:
            batch.append(event)
            if len(batch) == self.batch_size:
                yield services_pb2.ProgressEventBatch(events=batch)
                batch = []
        if batch:
            yield services_pb2.ProgressEventBatch(events=batch)


@pytest.fixture
def batching() -> Iterator[tuple[BatchingJobService, str]]:
    service = BatchingJobService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    services_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def test_watch_uses_batches_and_yields_each_event_once_in_order(batching):
    fake, address = batching
    fake.add_job("job-1", job_pb2.JOB_STATE_COMPLETED, convert_events("job-1", 10))

    with H2KClient(address, reconnect=FAST) as client:
        events = list(client.watch("job-1"))

    assert [event.seq for event in events] == list(range(1, 11))
    assert events[-1].result.outputs[0].path == "/out/vm.qcow2"
    assert fake.batch_after_seqs == [0]


def test_a_broken_batch_stream_resumes_after_the_last_event_yielded(batching):
    fake, address = batching
    fake.add_job("job-2", job_pb2.JOB_STATE_COMPLETED, convert_events("job-2", 12))
    # Breaks inside the third message (seqs 7-9): 7 and 8 never arrive in that stream.
    fake.break_before_seq = 9
    fake.replay_everything = True

    with H2KClient(address, reconnect=FAST) as client:
        seqs = [event.seq for event in client.watch("job-2")]

    assert seqs == list(range(1, 13))
    assert fake.batch_after_seqs == [0, 6]


def test_watch_falls_back_to_watchjob_on_a_control_plane_without_batches(control_plane):
    fake = control_plane.service  # FakeJobService: WatchJobBatches is UNIMPLEMENTED
    fake.add_job("job-3", job_pb2.JOB_STATE_COMPLETED, convert_events("job-3", 6))
    fake.break_before_seq = 4

    with H2KClient(control_plane.address, reconnect=FAST) as client:
        first = [event.seq for event in client.watch("job-3")]
        again = [event.seq for event in client.watch("job-3", after_seq=4)]

    assert first == [1, 2, 3, 4, 5, 6]
    assert again == [5, 6]
    # WatchJob served every stream: the first, its resumption and the second watch.
    assert fake.watch_after_seqs == [0, 3, 4]
