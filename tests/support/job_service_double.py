"""Test data builders and an in-process test double of the control plane's JobService.

The double stands in for the PEER; the client library (tests/client) and h2kctl
(tests/unit/cli) under test are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc


def timestamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=0)


def make_event(job_id: str, seq: int, state: Any, percent: float = 0.0, **fields: Any):
    """A ProgressEvent as an agent would send it (time, attempt and agent filled in)."""
    event = job_pb2.ProgressEvent(
        job_id=job_id,
        seq=seq,
        state=state,
        progress_percent=percent,
        attempt=1,
        agent="node-a",
        **fields,
    )
    event.time.CopyFrom(timestamp(1_700_000_000 + seq))
    return event


def convert_events(job_id: str, count: int, final: Any = job_pb2.JOB_STATE_COMPLETED):
    """RUNNING, count-2 PROGRESSING events, then a terminal event with a result."""
    events = [make_event(job_id, 1, job_pb2.JOB_STATE_RUNNING, phase="start")]
    total = 1 << 30
    for seq in range(2, count):
        percent = 100.0 * (seq - 1) / (count - 1)
        events.append(
            make_event(
                job_id,
                seq,
                job_pb2.JOB_STATE_PROGRESSING,
                percent,
                phase="convert",
                bytes_done=int(total * percent / 100),
                bytes_total=total,
                message="converting",
            )
        )
    result = job_pb2.JobResult()
    if final == job_pb2.JOB_STATE_COMPLETED:
        result.outputs.add(kind="image", path="/out/vm.qcow2", size_bytes=total, format="qcow2")
    else:
        result.error.CopyFrom(
            job_pb2.JobError(phase="convert", code="TOOL_FAILED", message="qemu-img exited 1")
        )
    events.append(make_event(job_id, count, final, 100.0, phase="done", result=result))
    return events


@dataclass
class FakeJobService(services_pb2_grpc.JobServiceServicer):
    """JobService double: stored jobs and events, with scripted stream failures."""

    jobs: dict[str, job_pb2.Job] = field(default_factory=dict)
    events: dict[str, list[job_pb2.ProgressEvent]] = field(default_factory=dict)
    submitted: list[job_pb2.JobSpec] = field(default_factory=list)
    watch_after_seqs: list[int] = field(default_factory=list)
    # Abort the first watch with UNAVAILABLE right before sending this seq.
    break_before_seq: int | None = None
    # Replay every event on every watch, ignoring after_seq (the client must deduplicate).
    replay_everything: bool = False
    # End the first watch normally after this seq, without a terminal event.
    end_early_after_seq: int | None = None

    def add_job(self, job_id: str, state: Any, events: list[job_pb2.ProgressEvent]) -> None:
        job = job_pb2.Job(state=state, attempt=1, assigned_agent="node-a")
        job.spec.job_id = job_id
        job.spec.operation = job_pb2.OPERATION_CONVERT
        if events and events[-1].HasField("result"):
            job.result.CopyFrom(events[-1].result)
        self.jobs[job_id] = job
        self.events[job_id] = events

    def SubmitJob(self, request, context):
        self.submitted.append(request.spec)
        job_id = request.spec.job_id
        created = job_id not in self.jobs
        if created:
            self.add_job(job_id, job_pb2.JOB_STATE_QUEUED, [])
            self.jobs[job_id].spec.CopyFrom(request.spec)
        return services_pb2.SubmitJobResponse(job=self.jobs[job_id], created=created)

    def GetJob(self, request, context):
        if request.job_id not in self.jobs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        return self.jobs[request.job_id]

    def ListJobs(self, request, context):
        jobs = [j for j in self.jobs.values() if not request.states or j.state in request.states]
        start = int(request.page_token or 0)
        end = start + (request.page_size or 100)
        token = str(end) if end < len(jobs) else ""
        return services_pb2.ListJobsResponse(jobs=jobs[start:end], next_page_token=token)

    def ListJobEvents(self, request, context):
        events = [e for e in self.events.get(request.job_id, []) if e.seq > request.after_seq]
        return services_pb2.ListJobEventsResponse(events=list(reversed(events)))

    def CancelJob(self, request, context):
        job = self.GetJob(request, context)
        job.cancel_requested = True
        job.state = job_pb2.JOB_STATE_CANCELLED
        return job

    def WatchJob(self, request, context):
        if request.job_id not in self.jobs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"job {request.job_id} not found")
        first_watch = not self.watch_after_seqs
        self.watch_after_seqs.append(request.after_seq)
        after = 0 if self.replay_everything else request.after_seq
        for event in self.events[request.job_id]:
            if event.seq <= after:
                continue
            if first_watch and event.seq == self.break_before_seq:
                context.abort(grpc.StatusCode.UNAVAILABLE, "control plane restarting")
            yield event
            if first_watch and event.seq == self.end_early_after_seq:
                return


@dataclass
class RunningDouble:
    service: FakeJobService
    address: str


@contextmanager
def served(service: FakeJobService) -> Iterator[RunningDouble]:
    """Serve ``service`` on a free loopback port until the block ends."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    services_pb2_grpc.add_JobServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield RunningDouble(service=service, address=f"127.0.0.1:{port}")
    finally:
        server.stop(grace=None)
