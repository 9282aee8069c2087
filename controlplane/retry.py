"""What happens to a job after one of its attempts ended without completing.

Pure: a job record and the way the attempt ended in, a :class:`Decision` out. No store, no
clock. The dispatcher and the progress recorder apply the decision.

Outcomes:

* ``RETRY``: the attempt failed for a reason another attempt may not hit (the agent was lost
  or restarted, a tool or the agent itself failed), the job is idempotent and
  ``execution_policy.retry_count`` has retries left. The job goes ``RETRYING`` and back to
  ``QUEUED`` after an exponential backoff.
* ``REQUEUE``: the job was taken off its agent by the operator or the agent (drain past its
  deadline, agent shutdown). It goes ``RETRYING -> QUEUED`` at once and uses up no retry.
* ``CANCEL``: a cancel was asked for and the attempt ended (or its agent was lost).
* ``FAIL``: anything else; the job ends ``FAILED`` with the attempt's error.

Which retries a job used is read back from its stored history (transitions to RETRYING whose
reason starts with :data:`RETRY_PREFIX`), so the count survives control-plane restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from controlplane.models import JobRecord
from protocol.errors import ErrorCode
from protocol.states import JobState

# Failures another attempt may well not hit. TIMEOUT is not among them: the job had its whole
# budget; input and path errors would fail the same way again.
RETRYABLE_CODES = frozenset(
    {
        ErrorCode.AGENT_LOST,
        ErrorCode.INTERNAL,
        ErrorCode.TOOL_FAILED,
        ErrorCode.OUT_OF_SPACE,
        ErrorCode.STALLED,
    }
)

RETRY_PREFIX = "retry "
REQUEUE_PREFIX = "requeued: "


class Outcome(StrEnum):
    RETRY = "RETRY"
    REQUEUE = "REQUEUE"
    CANCEL = "CANCEL"
    FAIL = "FAIL"


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff of counted retries: ``base * 2**(n-1)`` seconds before retry n, capped."""

    backoff_base: timedelta = timedelta(seconds=5)
    backoff_max: timedelta = timedelta(minutes=5)

    def backoff(self, retry_number: int) -> timedelta:
        """The pause before retry ``retry_number`` (1 for the first retry)."""
        delay = self.backoff_base * (2 ** max(0, retry_number - 1))
        return min(delay, self.backoff_max)


@dataclass(frozen=True)
class Decision:
    """The job's next state and the reason stored with the transition."""

    outcome: Outcome
    reason: str
    delay: timedelta = timedelta(0)

    @property
    def state(self) -> JobState:
        return {
            Outcome.RETRY: JobState.RETRYING,
            Outcome.REQUEUE: JobState.RETRYING,
            Outcome.CANCEL: JobState.CANCELLED,
            Outcome.FAIL: JobState.FAILED,
        }[self.outcome]


def retries_used(job: JobRecord) -> int:
    """How many counted retries the job went through so far."""
    return sum(
        1
        for t in job.history
        if t.to_state is JobState.RETRYING and t.reason.startswith(RETRY_PREFIX)
    )


def decide(
    job: JobRecord, code: str, failure: str, policy: RetryPolicy, *, evicted: bool = False
) -> Decision:
    """The outcome of an attempt of ``job`` that ended with error ``code``.

    Args:
        job: the job as stored before the attempt's end is applied.
        code: the JobError code of the attempt's end (CANCELLED for an agent's cancel).
        failure: the human-readable reason of the attempt's end.
        policy: the backoff of counted retries.
        evicted: the control plane took the job off a draining agent past its deadline.
    """
    spec_policy = job.spec.execution_policy
    attempt = f"attempt {job.attempt}: {failure}"
    if job.cancel_requested:
        if code == ErrorCode.CANCELLED:
            return Decision(Outcome.CANCEL, failure)
        if code == ErrorCode.AGENT_LOST:
            return Decision(Outcome.CANCEL, f"cancelled: {failure}")
        return Decision(Outcome.FAIL, failure)
    if code == ErrorCode.AGENT_SHUTDOWN or (evicted and code == ErrorCode.CANCELLED):
        if spec_policy.idempotent:
            return Decision(Outcome.REQUEUE, REQUEUE_PREFIX + attempt)
        return Decision(Outcome.FAIL, f"{failure} (not idempotent: not requeued)")
    if code == ErrorCode.CANCELLED:
        return Decision(Outcome.CANCEL, failure)
    if code not in RETRYABLE_CODES:
        return Decision(Outcome.FAIL, failure)
    used = retries_used(job)
    if not spec_policy.idempotent:
        return Decision(Outcome.FAIL, f"{failure} (not idempotent: no retry)")
    if used >= spec_policy.retry_count:
        limit = spec_policy.retry_count
        return Decision(Outcome.FAIL, f"{failure} (no retry left: retry_count is {limit})")
    delay = policy.backoff(used + 1)
    reason = (
        f"{RETRY_PREFIX}{used + 1} of {spec_policy.retry_count} in "
        f"{delay.total_seconds():g}s after {attempt}"
    )
    return Decision(Outcome.RETRY, reason, delay)


def next_attempt_at(job: JobRecord, policy: RetryPolicy) -> datetime | None:
    """When a RETRYING job may be queued again; None when it is not RETRYING."""
    if job.state is not JobState.RETRYING:
        return None
    entered = next((t for t in reversed(job.history) if t.to_state is JobState.RETRYING), None)
    if entered is None:
        return job.updated_at
    if entered.reason.startswith(RETRY_PREFIX):
        return entered.time + policy.backoff(retries_used(job))
    return entered.time
