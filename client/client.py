"""H2KClient: a typed, synchronous client of the control plane's JobService and AgentRegistry."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from client.channel import open_channel
from client.rpc import mapped_stream, rpc_errors
from client.watch import ReconnectPolicy, follow_job_events
from protocol.conversion import spec_to_proto, state_from_proto, state_to_proto
from protocol.errors import H2KError
from protocol.gen.h2k.v1 import (
    agent_pb2,
    job_pb2,
    migration_pb2,
    migration_pb2_grpc,
    services_pb2,
    services_pb2_grpc,
)
from protocol.spec import JobSpec, parse_spec
from protocol.states import JobState

DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class SubmitResult:
    """What SubmitJob answered.

    Attributes:
        job: the stored job.
        created: False when an identical job with this job_id already existed.
    """

    job: job_pb2.Job
    created: bool


class H2KClient:
    """Client of one control plane. Use as a context manager, or call :meth:`close`.

    Every method raises :class:`protocol.errors.H2KError` subclasses (never ``grpc.RpcError``).
    """

    def __init__(
        self,
        server: str,
        *,
        insecure: bool = True,
        timeout: float = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        reconnect: ReconnectPolicy | None = None,
    ) -> None:
        """Open a channel to ``server`` ("host:port").

        Args:
            server: the control plane address.
            insecure: use plaintext gRPC when no ``credentials`` are given.
            timeout: deadline in seconds of each unary call (watch streams have none).
            credentials: channel credentials for TLS (``runtime.tls.client_credentials``);
                override ``insecure``.
            reconnect: how :meth:`watch` retries broken streams.
        """
        self.server = server
        self.timeout = timeout
        self._reconnect = reconnect or ReconnectPolicy()
        self._channel = open_channel(server, insecure=insecure, credentials=credentials)
        self._jobs = services_pb2_grpc.JobServiceStub(self._channel)
        self._agents = services_pb2_grpc.AgentRegistryStub(self._channel)
        self._migrations = migration_pb2_grpc.MigrationServiceStub(self._channel)
        # Whether the control plane has WatchJobBatches (None: not known yet).
        self._watch_batches: bool | None = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> H2KClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- jobs ------------------------------------------------------------------------------

    def submit(self, spec: JobSpec | Mapping[str, Any]) -> SubmitResult:
        """Validate ``spec`` locally, then submit it.

        Raises:
            protocol.errors.InvalidArgument: the spec is invalid (nothing was sent), or the
                control plane rejected it.
            protocol.errors.AlreadyExists: the job_id exists with a different spec.
        """
        model = spec if isinstance(spec, JobSpec) else parse_spec(dict(spec))
        request = services_pb2.SubmitJobRequest(spec=spec_to_proto(model))
        with rpc_errors():
            response = self._jobs.SubmitJob(request, timeout=self.timeout)
        return SubmitResult(job=response.job, created=response.created)

    def submit_many(
        self, specs: Sequence[JobSpec | Mapping[str, Any]]
    ) -> builtins.list[SubmitResult]:
        """Validate every spec locally, then submit them in one call: all or none.

        Raises:
            protocol.errors.InvalidArgument: a spec is invalid (nothing was sent), or the
                control plane rejected one (``specs[i]: ...``; none was stored).
            protocol.errors.AlreadyExists: ``specs[i].job_id`` exists with a different spec.
        """
        models = [s if isinstance(s, JobSpec) else parse_spec(dict(s)) for s in specs]
        request = services_pb2.SubmitJobsRequest(specs=[spec_to_proto(m) for m in models])
        with rpc_errors():
            response = self._jobs.SubmitJobs(request, timeout=self.timeout)
        return [SubmitResult(job=r.job, created=r.created) for r in response.results]

    def get(self, job_id: str) -> job_pb2.Job:
        """The job, with its history and result."""
        with rpc_errors():
            request = services_pb2.GetJobRequest(job_id=job_id)
            return self._jobs.GetJob(request, timeout=self.timeout)

    def list(
        self, states: Sequence[JobState] | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> builtins.list[job_pb2.Job]:
        """Every job (in one of ``states`` when given), following page tokens."""
        jobs: builtins.list[job_pb2.Job] = []
        request = services_pb2.ListJobsRequest(
            states=[state_to_proto(s) for s in states or ()], page_size=page_size
        )
        while True:
            with rpc_errors():
                response = self._jobs.ListJobs(request, timeout=self.timeout)
            jobs.extend(response.jobs)
            if not response.next_page_token:
                return jobs
            request.page_token = response.next_page_token

    def cancel(self, job_id: str, reason: str = "") -> job_pb2.Job:
        """Ask for cancellation; the job returned may still be stopping (cancel_requested)."""
        request = services_pb2.CancelJobRequest(job_id=job_id, reason=reason)
        with rpc_errors():
            return self._jobs.CancelJob(request, timeout=self.timeout)

    def watch(self, job_id: str, after_seq: int = 0) -> Iterator[job_pb2.ProgressEvent]:
        """Follow the job's events with seq > ``after_seq`` until it is terminal.

        Reconnects on UNAVAILABLE and broken streams (see :class:`ReconnectPolicy`), resuming
        after the last event yielded; no seq is yielded twice.
        """

        def open_stream(after: int) -> Iterator[job_pb2.ProgressEvent]:
            request = services_pb2.WatchJobRequest(job_id=job_id, after_seq=after)
            return self._watch_events(request)

        def job_is_terminal() -> bool:
            return state_from_proto(self.get(job_id).state).is_terminal

        return follow_job_events(
            job_id, open_stream, job_is_terminal, after_seq=after_seq, policy=self._reconnect
        )

    def _watch_events(
        self, request: services_pb2.WatchJobRequest
    ) -> Iterator[job_pb2.ProgressEvent]:
        """One watch stream's events: WatchJobBatches (many events per message), or WatchJob
        from a control plane that does not have it (remembered for later watches)."""
        if self._watch_batches is not False:
            try:
                for batch in mapped_stream(self._jobs.WatchJobBatches(request)):
                    self._watch_batches = True
                    yield from batch.events
                return
            except H2KError as exc:
                if exc.code is not grpc.StatusCode.UNIMPLEMENTED or self._watch_batches:
                    raise
                self._watch_batches = False
        yield from mapped_stream(self._jobs.WatchJob(request))

    def events(self, job_id: str, after_seq: int = 0) -> builtins.list[job_pb2.ProgressEvent]:
        """The stored events with seq > ``after_seq``, in seq order."""
        request = services_pb2.ListJobEventsRequest(job_id=job_id, after_seq=after_seq)
        with rpc_errors():
            response = self._jobs.ListJobEvents(request, timeout=self.timeout)
        return sorted(response.events, key=lambda event: event.seq)

    # --- agents ----------------------------------------------------------------------------

    def agents(self) -> builtins.list[agent_pb2.AgentInfo]:
        """Every registered agent."""
        with rpc_errors():
            response = self._agents.ListAgents(
                services_pb2.ListAgentsRequest(), timeout=self.timeout
            )
        return list(response.agents)

    def cordon(self, name: str, cordon: bool = True) -> agent_pb2.AgentInfo:
        """Stop (or, with ``cordon=False``, resume) scheduling jobs on the agent."""
        request = services_pb2.CordonAgentRequest(name=name, cordon=cordon)
        with rpc_errors():
            return self._agents.CordonAgent(request, timeout=self.timeout)

    def drain(self, name: str, deadline_seconds: int) -> agent_pb2.AgentInfo:
        """Cordon the agent and let its running jobs finish within ``deadline_seconds``."""
        request = services_pb2.DrainAgentRequest(name=name, deadline_seconds=deadline_seconds)
        with rpc_errors():
            return self._agents.DrainAgent(request, timeout=self.timeout)

    # --- migrations --------------------------------------------------------------------------

    def submit_migrations(
        self, specs: Sequence[migration_pb2.MigrationSpec]
    ) -> builtins.list[migration_pb2.SubmitMigrationResponse]:
        """Submit one migration or a wave (several: all or none).

        Raises:
            protocol.errors.InvalidArgument: naming ``specs[i].<field>`` and the rule.
            protocol.errors.AlreadyExists: a migration_id exists with a different spec.
        """
        with rpc_errors():
            if len(specs) == 1:
                request = migration_pb2.SubmitMigrationRequest(spec=specs[0])
                return [self._migrations.SubmitMigration(request, timeout=self.timeout)]
            wave = migration_pb2.SubmitMigrationsRequest(specs=list(specs))
            return list(self._migrations.SubmitMigrations(wave, timeout=self.timeout).results)

    def get_migration(self, migration_id: str) -> migration_pb2.Migration:
        with rpc_errors():
            request = migration_pb2.GetMigrationRequest(migration_id=migration_id)
            return self._migrations.GetMigration(request, timeout=self.timeout)

    def list_migrations(self) -> builtins.list[migration_pb2.Migration]:
        """Every migration, in submission order."""
        found: builtins.list[migration_pb2.Migration] = []
        token = ""
        with rpc_errors():
            while True:
                request = migration_pb2.ListMigrationsRequest(page_size=500, page_token=token)
                page = self._migrations.ListMigrations(request, timeout=self.timeout)
                found += page.migrations
                token = page.next_page_token
                if not token:
                    return found

    def cancel_migration(self, migration_id: str, reason: str = "") -> migration_pb2.Migration:
        with rpc_errors():
            request = migration_pb2.CancelMigrationRequest(migration_id=migration_id, reason=reason)
            return self._migrations.CancelMigration(request, timeout=self.timeout)
