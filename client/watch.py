"""Following a job's progress events across broken streams.

The control plane's WatchJob (and WatchJobBatches, the same events several to a message)
replays stored events after a sequence number, follows live and ends when the job is
terminal. A stream can break at any time (control plane restart, network blip); this module
reconnects with a capped backoff and resumes after the last event it yielded, so a caller
sees every seq exactly once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import grpc

from protocol.errors import H2KError, Unavailable
from protocol.gen.h2k.v1 import job_pb2

log = logging.getLogger(__name__)

TERMINAL_EVENT_STATES = frozenset(
    {job_pb2.JOB_STATE_COMPLETED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}
)

OpenStream = Callable[[int], Iterable[job_pb2.ProgressEvent]]
"""Opens a watch after the given seq, yielding events; iteration raises typed ``H2KError``s."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """How long and how often a broken watch is retried.

    Attributes:
        initial_backoff: seconds before the first reconnect attempt.
        max_backoff: cap of the doubling delay between attempts.
        max_total_wait: give up once failures have lasted this long without a single event
            getting through (the clock restarts with every event received).
        retry_codes: gRPC status codes that mean "try again".
    """

    initial_backoff: float = 0.5
    max_backoff: float = 5.0
    max_total_wait: float = 60.0
    retry_codes: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
    )


class _Backoff:
    """Doubling delays, capped, within a total budget of consecutive failure time."""

    def __init__(
        self,
        policy: ReconnectPolicy,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        self._policy = policy
        self._sleep = sleep
        self._clock = clock
        self._delay = policy.initial_backoff
        self._failing_since: float | None = None

    def reset(self) -> None:
        self._delay = self._policy.initial_backoff
        self._failing_since = None

    def wait(self, job_id: str, after_seq: int, reason: str) -> None:
        """Sleep before the next attempt, or raise when the budget is spent."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now
        failing_for = now - self._failing_since
        budget_left = self._policy.max_total_wait - failing_for
        if budget_left <= 0:
            log.warning(
                "event=watch_gave_up job_id=%s after_seq=%d failing_for=%.1fs reason=%r",
                job_id,
                after_seq,
                failing_for,
                reason,
            )
            raise Unavailable(f"gave up watching after {failing_for:.0f} s of failures: {reason}")
        delay = min(self._delay, budget_left)
        log.info(
            "event=watch_reconnect job_id=%s after_seq=%d delay=%.2fs reason=%r",
            job_id,
            after_seq,
            delay,
            reason,
        )
        self._sleep(delay)
        self._delay = min(self._delay * 2, self._policy.max_backoff)


def follow_job_events(
    job_id: str,
    open_stream: OpenStream,
    job_is_terminal: Callable[[], bool],
    *,
    after_seq: int = 0,
    policy: ReconnectPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[job_pb2.ProgressEvent]:
    """Yield a job's events with seq > ``after_seq``, each once, in order, until it ends.

    The iterator ends when a stream ends normally after a terminal event, or ends normally
    while the job is terminal (``job_is_terminal`` asks the control plane). A stream that
    ends early or breaks with a retryable code is reopened after the last yielded seq.
    Waiting for the stream to end after a terminal event (rather than stopping at it) keeps
    a watch correct if a failed attempt is followed by a retry's events.

    Raises:
        protocol.errors.Unavailable: reconnecting failed for longer than the policy allows.
        protocol.errors.H2KError: any non-retryable error (NOT_FOUND, ...).
    """
    policy = policy or ReconnectPolicy()
    backoff = _Backoff(policy, sleep, clock)
    last_seq = after_seq
    last_was_terminal = False
    while True:
        try:
            for event in open_stream(last_seq):
                if event.seq <= last_seq:
                    continue  # replayed after a reconnect: already yielded
                last_seq = event.seq
                last_was_terminal = event.state in TERMINAL_EVENT_STATES
                backoff.reset()
                yield event
            if last_was_terminal or job_is_terminal():
                return
            reason = "stream ended before the job finished"
        except H2KError as exc:
            if exc.code not in policy.retry_codes:
                raise
            reason = exc.message
        backoff.wait(job_id, last_seq, reason)
