"""Several real control-plane replicas on one real PostgreSQL, with real agents.

Agents register with one replica (``address``, as in :class:`Cluster`); clients may talk to
any replica. Timings are short so that take-overs happen in seconds: stream leases of 3 s,
agent leases of 5 s, heartbeats every second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

from client import H2KClient
from devsupport.cluster import BIN, Process, free_port, is_serving, wait_for
from protocol.gen.h2k.v1 import job_pb2
from tests.support.faults import CONTROLPLANE_ARGS, FaultCluster, assert_gap_free
from tests.support.postgres import PostgresServer

STREAM_LEASE_SECONDS = 3


@dataclass
class ReplicaCluster(FaultCluster):
    """A :class:`FaultCluster` whose control plane is several replicas sharing PostgreSQL."""

    postgres: PostgresServer | None = None
    replicas: dict[str, Process] = field(default_factory=dict)
    replica_addresses: dict[str, str] = field(default_factory=dict)
    _clients: dict[str, H2KClient] = field(default_factory=dict, repr=False)

    def start_replica(self, name: str) -> Process:
        """Start (or restart) replica ``name`` and wait until it serves."""
        address = self.replica_addresses.setdefault(name, f"127.0.0.1:{free_port()}")
        proc = Process(
            name,
            [
                str(BIN / "h2k-controlplane"),
                "--listen",
                address,
                "--db",
                self.db_url or "",
                "--insecure",
                "--heartbeat-interval",
                "1",
                "--lease-seconds",
                "5",
                "--stream-lease-seconds",
                str(STREAM_LEASE_SECONDS),
                *CONTROLPLANE_ARGS,
            ],
            self.workdir / f"{name}.log",
        )
        proc.start()
        self.replicas[name] = proc
        wait_for(lambda: is_serving(address), what=f"replica {name} health", timeout=30)
        return proc

    def point_agents_at(self, name: str) -> None:
        """Agents started from now on register and heartbeat with replica ``name``."""
        self.address = self.replica_addresses[name]

    def api_of(self, name: str) -> H2KClient:
        client = self._clients.get(name)
        if client is None:
            client = H2KClient(self.replica_addresses[name], insecure=True, timeout=10)
            self._clients[name] = client
        return client

    # --- who holds what (read from the database) ----------------------------------------

    def _replica_of(self, owner: str) -> str | None:
        pid = int(re.split(r"-", owner)[-2])
        for name, proc in self.replicas.items():
            if proc.popen is not None and proc.popen.pid == pid and proc.alive():
                return name
        return None

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url or "", connect_timeout=3) as conn:
            return list(conn.execute(sql.encode()).fetchall())

    def scheduler(self) -> str | None:
        """The live replica holding the scheduler role, if any."""
        rows = self._query(
            "SELECT owner FROM roles WHERE name = 'scheduler' AND expires_at > clock_timestamp()"
        )
        return self._replica_of(rows[0][0]) if rows else None

    def stream_owners(self) -> dict[str, str | None]:
        """job_id -> the replica following its stream (unexpired leases only)."""
        rows = self._query(
            "SELECT job_id, owner FROM job_streams WHERE expires_at > clock_timestamp()"
        )
        return {job_id: self._replica_of(owner) for job_id, owner in rows}

    # --- evidence -----------------------------------------------------------------------

    def executions(self, job_id: str) -> dict[str, int]:
        """agent -> how many times its own log says it started the job (RUNNING events)."""
        runs = {}
        for agent in self.agents:
            log = self.agent_log(agent, job_id)
            started = [e for e in log if e.state == job_pb2.JOB_STATE_RUNNING]
            if log:
                runs[agent] = len(started)
        return runs

    def assert_ran_once_with_full_events(self, job_id: str, api: H2KClient) -> None:
        """Completed on one agent, in one attempt, stored events 1..N == that agent's log."""
        job = api.get(job_id)
        assert job.state == job_pb2.JOB_STATE_COMPLETED, f"{job_id}: {job.result.error.message}"
        assert job.attempt == 1, f"{job_id} needed {job.attempt} attempts"
        assigned = [t for t in job.history if t.to_state == job_pb2.JOB_STATE_ASSIGNED]
        # An assignment may be taken back when the agent never started the job (the store
        # went away before ExecuteJob was sent); one that ran is never repeated.
        taken_back = [
            t
            for t in job.history
            if t.from_state == job_pb2.JOB_STATE_ASSIGNED and t.to_state == job_pb2.JOB_STATE_QUEUED
        ]
        assert len(assigned) - len(taken_back) == 1, f"{job_id}: {job.history}"
        assert self.executions(job_id) == {job.assigned_agent: 1}, self.executions(job_id)
        stored = api.events(job_id)
        assert_gap_free([e.seq for e in stored], job_id)
        assert stored == self.agent_log(job.assigned_agent, job_id), f"{job_id}: store != log"

    def logs(self) -> str:
        parts = [super().logs()]
        for proc in self.replicas.values():
            parts.append(f"----- {proc.name} -----\n{proc.log()[-8000:]}")
        if self.postgres is not None:
            parts.append(f"----- postgres -----\n{self.postgres.log()[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        super().stop()
        for proc in self.replicas.values():
            proc.stop()
