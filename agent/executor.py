"""Runs jobs on this agent: admission, one task per job, terminal events, cancellation.

Every accepted job emits RUNNING first, then PROGRESSING events, then exactly one terminal
event (COMPLETED, FAILED or CANCELLED), whatever happens to it: a failure inside an operation,
a timeout, a cancel, the agent shutting down, or a bug (INTERNAL, logged, never a crash).

Before the terminal event the executor finishes what every operation's result owes: the
sha256 of each output (hashed here when the operation did not), and with
``artifacts.log_upload`` the job's own log beside the outputs (:mod:`agent.job_log`).
Error messages are capped like the control plane's (:func:`runtime.status.cap_message`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import job_log, proc
from agent.disk.atomic import recorded_sha256, remove_leftovers, writing_as
from agent.disk.digest import sha256_of_path
from agent.disk.leftovers import release_leftovers
from agent.errors import JobFailure
from agent.events import EventLog, JobEvents, Subscription
from agent.metrics import JobObserver, ObservedProgress
from agent.ops import OPERATIONS, JobContext, OpResult, Output
from agent.paths import PathPolicy
from agent.progress import ProgressReporter
from agent.recovery import kill_orphans
from protocol.conversion import dict_to_struct, spec_from_proto
from protocol.errors import AlreadyExists, ErrorCode, FailedPrecondition, ResourceExhausted
from protocol.gen.h2k.v1 import job_pb2, services_pb2
from protocol.spec import JobSpec
from runtime.status import cap_message

log = logging.getLogger(__name__)

CANCEL_WAIT_SECONDS = 15.0


@dataclass
class RunningJob:
    spec: JobSpec
    events: JobEvents
    progress: ProgressReporter
    observer: JobObserver
    attempt: int = 0
    task: asyncio.Task[None] | None = None
    # Set once the operation's context is built: where its log goes (artifacts.log_upload).
    context: JobContext | None = None
    tool_runs: list[proc.ToolRun] = field(default_factory=list)
    cancel_reason: str | None = None
    # CANCELLED for a cancel asked for; AGENT_SHUTDOWN (a FAILED event) when the agent stops.
    cancel_code: ErrorCode = ErrorCode.CANCELLED
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Executor:
    """Admits and runs jobs, at most ``max_concurrent_jobs`` at a time."""

    def __init__(
        self,
        *,
        node_name: str,
        policy: PathPolicy,
        event_log: EventLog,
        state_dir: Path,
        max_concurrent_jobs: int,
        timeout_scale: float = 1.0,
        stall_seconds: float | None = None,
    ) -> None:
        self.node_name = node_name
        self.policy = policy
        self.event_log = event_log
        self.state_dir = state_dir
        self.max_concurrent_jobs = max_concurrent_jobs
        # For tests only (--timeout-scale): multiplies every job's timeout_seconds.
        self.timeout_scale = timeout_scale
        self.stall_seconds = stall_seconds
        self._jobs: dict[str, RunningJob] = {}
        self._shutting_down = False

    def running_job_ids(self) -> list[str]:
        return sorted(self._jobs)

    def is_running(self, job_id: str) -> bool:
        return job_id in self._jobs

    def recover(self) -> None:
        """After a restart: release leftover attachments (mounts, loop devices, FUSE exports),
        stop orphaned tools, remove leftover temporary outputs, and end every unfinished
        job's log with a FAILED event (AGENT_LOST) saying where it stopped.
        """
        # First, while the exports are alive: unmount, detach, then stop each daemon cleanly.
        release_leftovers(self.state_dir)
        kill_orphans(self.state_dir)
        remove_leftovers(self.state_dir)
        for last in self.event_log.unfinished_jobs():
            events = JobEvents(
                self.event_log,
                job_id=last.job_id,
                attempt=last.attempt,
                agent=self.node_name,
                start_seq=last.seq + 1,
            )
            message = (
                f"agent {self.node_name} lost during {last.phase or 'start'} at "
                f"{last.progress_percent:.0f}% (the agent restarted)"
            )
            events.emit(
                job_pb2.JOB_STATE_FAILED,
                phase=last.phase,
                progress_percent=last.progress_percent,
                message=message,
                result=_error_result(last.phase, ErrorCode.AGENT_LOST, message),
            )
            log.warning("closed unfinished job after restart job_id=%s", last.job_id)

    def start(self, request: services_pb2.ExecuteJobRequest) -> Subscription:
        """Admit a job and start it; returns a subscription to its events from the first.

        Raises:
            InvalidArgument: the spec is invalid.
            AlreadyExists: a job with this id is running here.
            ResourceExhausted: every slot is taken.
            FailedPrecondition: the agent is shutting down.
        """
        spec = spec_from_proto(request.spec)
        if self._shutting_down:
            raise FailedPrecondition("the agent is shutting down")
        if spec.job_id in self._jobs:
            raise AlreadyExists(f"job {spec.job_id} is already running on {self.node_name}")
        if len(self._jobs) >= self.max_concurrent_jobs:
            raise ResourceExhausted(
                f"{self.node_name} is running {len(self._jobs)} of {self.max_concurrent_jobs} jobs"
            )
        events = JobEvents(
            self.event_log,
            job_id=spec.job_id,
            attempt=request.attempt,
            agent=self.node_name,
            start_seq=request.start_seq,
        )
        observer = JobObserver(spec, self.node_name, request.attempt)
        progress = ObservedProgress(events, observer)
        job = RunningJob(
            spec=spec, events=events, progress=progress, observer=observer, attempt=request.attempt
        )
        self._jobs[spec.job_id] = job
        self.event_log.begin_attempt(spec.job_id)
        subscription = self.event_log.subscribe(spec.job_id)
        # RUNNING goes out before the task exists, so it is first whatever happens next.
        events.emit(
            job_pb2.JOB_STATE_RUNNING,
            phase="start",
            message=f"{spec.operation.value} started on {self.node_name}",
        )
        job.task = asyncio.create_task(self._run(job), name=f"job-{spec.job_id}")
        job.task.add_done_callback(lambda _task: self._finish(job))
        log.info(
            "job accepted job_id=%s operation=%s attempt=%d",
            spec.job_id,
            spec.operation.value,
            request.attempt,
        )
        return subscription

    async def cancel(self, job_id: str, reason: str = "") -> job_pb2.JobState | None:
        """Cancel a running job and wait (bounded) for its terminal event.

        Returns:
            The job's state afterwards, or None when it is not running here.
        """
        job = self._jobs.get(job_id)
        if job is None:
            return None
        self._request_cancel(job, reason or "cancelled on request")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(job.done.wait()), CANCEL_WAIT_SECONDS)
        return job.events.last_state

    async def shutdown(self, grace_seconds: float = 0.0) -> None:
        """Refuse new jobs, let the running ones finish within ``grace_seconds``, then
        cancel the rest (each ends FAILED with AGENT_SHUTDOWN, which the control plane
        requeues) and wait for their terminal events.
        """
        self._shutting_down = True
        waits = [asyncio.create_task(job.done.wait()) for job in self._jobs.values()]
        if waits and grace_seconds > 0:
            log.info("waiting for running jobs jobs=%d grace=%.0fs", len(waits), grace_seconds)
            await asyncio.wait(waits, timeout=grace_seconds)
        for wait in waits:
            wait.cancel()
        jobs = list(self._jobs.values())
        for job in jobs:
            where = f"{job.progress.phase} at {job.progress.percent:.0f}%"
            reason = f"agent {self.node_name} shut down during {where}"
            self._request_cancel(job, reason, ErrorCode.AGENT_SHUTDOWN)
        for job in jobs:
            await job.done.wait()

    def _request_cancel(
        self, job: RunningJob, reason: str, code: ErrorCode = ErrorCode.CANCELLED
    ) -> None:
        # Cancel the task once: a second cancel would interrupt the process-group kill.
        if job.cancel_reason is None and job.task is not None:
            job.cancel_reason = reason
            job.cancel_code = code
            log.info("cancelling job job_id=%s reason=%s", job.spec.job_id, reason)
            job.task.cancel()

    async def _run(self, job: RunningJob) -> None:
        spec = job.spec
        try:
            async with asyncio.timeout(spec.execution_policy.timeout_seconds * self.timeout_scale):
                result = await self._run_operation(job)
        except asyncio.CancelledError:
            self._end_cancelled(job)
            return
        except TimeoutError:
            limit = spec.execution_policy.timeout_seconds
            message = f"the job exceeded execution_policy.timeout_seconds ({limit} s)"
            if self.timeout_scale != 1.0:
                message += f" scaled by --timeout-scale {self.timeout_scale:g}"
            self._terminate(job, job_pb2.JOB_STATE_FAILED, ErrorCode.TIMEOUT, message)
            return
        except JobFailure as exc:
            self._terminate(job, job_pb2.JOB_STATE_FAILED, exc.code, exc.message, exc.phase)
            return
        except Exception as exc:
            log.exception("job crashed job_id=%s", spec.job_id)
            message = f"internal error: {type(exc).__name__}: {exc}"
            self._terminate(job, job_pb2.JOB_STATE_FAILED, ErrorCode.INTERNAL, message)
            return
        self._complete(job, result)

    async def _run_operation(self, job: RunningJob) -> OpResult:
        spec = job.spec
        if spec.operation.is_internal:
            # A migration's publish/cleanup job reads no input: its image.path is the staged
            # boot disk the control plane names, inside the output directory.
            output_dir = self.policy.check_output_dir(spec.artifacts.output_path)
            input_path = self.policy.check_inside_output_dir(spec.image.path, output_dir)
        else:
            input_path = self.policy.check_input(spec.image.path)
            output_dir = self.policy.check_output_dir(spec.artifacts.output_path)
            job.observer.observe_input(input_path)
        ctx = JobContext(
            spec=spec,
            input_path=input_path,
            output_dir=output_dir,
            state_dir=self.state_dir,
            policy=self.policy,
            progress=job.progress,
            node_name=self.node_name,
            attempt=job.attempt,
            stall_seconds=self.stall_seconds,
        )
        job.context = ctx
        with (
            job.observer.activated(),
            writing_as(self.node_name, job.attempt),
            proc.recording_tools() as runs,
        ):
            job.tool_runs = runs
            result = await OPERATIONS[spec.operation](ctx)
        outputs = [await _with_digest(o) for o in result.outputs]
        if spec.artifacts.log_upload:
            listed = [_output_dict(o) for o in outputs]
            outputs.append(self._publish_log(job, {"state": "COMPLETED", "outputs": listed}))
        return dataclasses.replace(result, outputs=outputs)

    def _publish_log(self, job: RunningJob, outcome: dict[str, Any]) -> Output:
        """Write the job's own log (artifacts.log_upload) and return its output.

        Raises:
            JobFailure, OSError: it could not be written.
        """
        assert job.context is not None
        events = self.event_log.read_after(job.spec.job_id, 0)
        data = job_log.log_lines(events, job.tool_runs, outcome)
        return job_log.publish_log(job.context, data, hashlib.sha256(data).hexdigest())

    def _failure_log(self, job: RunningJob, code: ErrorCode, message: str) -> list[Output]:
        """On failure, the log too (best effort: the failure is what the job reports)."""
        if not job.spec.artifacts.log_upload or job.context is None:
            return []
        try:
            outcome = {"state": "FAILED", "code": code.value, "message": message}
            return [self._publish_log(job, outcome)]
        except (JobFailure, OSError) as exc:
            log.warning("job log not written job_id=%s error=%s", job.spec.job_id, exc)
            return []

    def _complete(self, job: RunningJob, result: OpResult) -> None:
        # Metrics first: whoever sees the terminal event finds them counted.
        job.observer.end("completed")
        job.events.emit(
            job_pb2.JOB_STATE_COMPLETED,
            phase="done",
            progress_percent=100.0,
            message=f"{job.spec.operation.value} completed",
            result=job_pb2.JobResult(
                outputs=[_output_proto(o) for o in result.outputs],
                metrics=dict_to_struct(result.metrics),
                details=dict_to_struct(result.details),
            ),
        )
        log.info("job completed job_id=%s metrics=%s", job.spec.job_id, result.metrics)

    def _terminate(
        self,
        job: RunningJob,
        state: job_pb2.JobState,
        code: ErrorCode,
        message: str,
        phase: str | None = None,
    ) -> None:
        if job.events.finished:
            return
        message = cap_message(message)
        phase = phase or job.progress.phase
        name = job_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()
        result = _error_result(phase, code, message)
        if state == job_pb2.JOB_STATE_FAILED:
            result.outputs.extend(_output_proto(o) for o in self._failure_log(job, code, message))
        job.observer.end(name, code.value)
        job.events.emit(
            state,
            phase=phase,
            progress_percent=job.progress.percent,
            message=message,
            result=result,
        )
        log.info(
            "job %s job_id=%s code=%s phase=%s message=%s",
            name,
            job.spec.job_id,
            code.value,
            phase,
            message,
        )

    def _end_cancelled(self, job: RunningJob) -> None:
        """The terminal event of a cancelled task: CANCELLED, or FAILED on agent shutdown."""
        reason = job.cancel_reason or "cancelled"
        if job.cancel_code is ErrorCode.CANCELLED:
            self._terminate(job, job_pb2.JOB_STATE_CANCELLED, ErrorCode.CANCELLED, reason)
        else:
            self._terminate(job, job_pb2.JOB_STATE_FAILED, job.cancel_code, reason)

    def _finish(self, job: RunningJob) -> None:
        """Task done callback: guarantee a terminal event, then free the slot."""
        if not job.events.finished:
            # The task was cancelled before it ever ran, or died in an unexpected way.
            if job.cancel_reason is not None:
                self._end_cancelled(job)
            else:
                self._terminate(
                    job,
                    job_pb2.JOB_STATE_FAILED,
                    ErrorCode.INTERNAL,
                    "the job ended without a result",
                )
        self._jobs.pop(job.spec.job_id, None)
        job.done.set()


def _error_result(phase: str, code: ErrorCode, message: str) -> job_pb2.JobResult:
    message = cap_message(message)
    return job_pb2.JobResult(error=job_pb2.JobError(phase=phase, code=code.value, message=message))


async def _with_digest(output: Output) -> Output:
    """The output with its sha256: the operation's, else its record's while the file is
    unchanged since (a staged disk a publish job renamed), else hashed now."""
    if output.sha256:
        return output
    digest = recorded_sha256(output.path) or await sha256_of_path(output.path)
    return dataclasses.replace(output, sha256=digest)


def _output_dict(output: Output) -> dict[str, Any]:
    return {"kind": output.kind, "path": str(output.path), "sha256": output.sha256}


def _output_proto(output: Output) -> job_pb2.JobOutput:
    return job_pb2.JobOutput(
        kind=output.kind,
        path=str(output.path),
        size_bytes=output.size_bytes,
        format=output.format,
        sha256=output.sha256,
    )
