"""H2KClient.watch against a JobService double whose streams break."""

from __future__ import annotations

import time

import grpc
import pytest

from client import H2KClient, ReconnectPolicy
from protocol.errors import NotFound, Unavailable
from protocol.gen.h2k.v1 import job_pb2
from tests.support.job_service_double import convert_events

FAST = ReconnectPolicy(initial_backoff=0.01, max_backoff=0.05, max_total_wait=3.0)


def watch_seqs(address: str, job_id: str, after_seq: int = 0) -> list[int]:
    with H2KClient(address, timeout=5, reconnect=FAST) as client:
        return [event.seq for event in client.watch(job_id, after_seq=after_seq)]


def test_watch_resumes_after_unavailable_without_repeating_a_seq(control_plane):
    fake = control_plane.service
    fake.add_job("job-1", job_pb2.JOB_STATE_COMPLETED, convert_events("job-1", 8))
    fake.break_before_seq = 5

    assert watch_seqs(control_plane.address, "job-1") == list(range(1, 9))
    # One broken stream after seq 4, then one resumed after it.
    assert fake.watch_after_seqs == [0, 4]


def test_watch_skips_events_a_server_replays_again(control_plane):
    fake = control_plane.service
    fake.add_job("job-2", job_pb2.JOB_STATE_FAILED, convert_events("job-2", 6, final=8))
    fake.break_before_seq = 4
    fake.replay_everything = True

    with H2KClient(control_plane.address, reconnect=FAST) as client:
        events = list(client.watch("job-2"))

    assert [event.seq for event in events] == [1, 2, 3, 4, 5, 6]
    assert events[-1].state == job_pb2.JOB_STATE_FAILED
    assert events[-1].result.error.code == "TOOL_FAILED"


def test_watch_starts_after_the_requested_seq(control_plane):
    control_plane.service.add_job("job-3", job_pb2.JOB_STATE_COMPLETED, convert_events("job-3", 5))

    assert watch_seqs(control_plane.address, "job-3", after_seq=2) == [3, 4, 5]


def test_watch_reconnects_when_a_stream_ends_before_the_job_is_terminal(control_plane):
    fake = control_plane.service
    fake.add_job("job-4", job_pb2.JOB_STATE_PROGRESSING, convert_events("job-4", 6))
    fake.end_early_after_seq = 3

    assert watch_seqs(control_plane.address, "job-4") == [1, 2, 3, 4, 5, 6]
    assert fake.watch_after_seqs == [0, 3]


def test_watch_of_an_unknown_job_raises_not_found(control_plane):
    with pytest.raises(NotFound) as caught:
        watch_seqs(control_plane.address, "missing")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND


def test_watch_gives_up_when_the_control_plane_stays_unreachable(control_plane):
    # Port 1 on loopback: nothing listens there, every attempt fails fast.
    address = control_plane.address.rsplit(":", 1)[0] + ":1"
    policy = ReconnectPolicy(initial_backoff=0.01, max_backoff=0.05, max_total_wait=0.3)
    started = time.monotonic()
    with H2KClient(address, reconnect=policy) as client, pytest.raises(Unavailable):
        list(client.watch("job-5"))
    assert time.monotonic() - started < 10
