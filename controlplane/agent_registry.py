"""The AgentRegistry servicer: agents register and heartbeat; admins list, cordon, drain."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from controlplane.auth import check_agent_name, current_principal
from controlplane.dispatch.handles import AgentEvents
from controlplane.leases import AgentLiveness, agent_liveness
from controlplane.models import AgentRecord
from controlplane.store import JobStore
from protocol.conversion import utcnow
from protocol.errors import InvalidArgument
from protocol.gen.h2k.v1 import agent_pb2, services_pb2, services_pb2_grpc
from runtime.status import Context, unary_rpc

log = logging.getLogger(__name__)


_WIRE_STATES = {
    AgentLiveness.READY: agent_pb2.AGENT_STATE_READY,
    AgentLiveness.CORDONED: agent_pb2.AGENT_STATE_CORDONED,
    AgentLiveness.DRAINING: agent_pb2.AGENT_STATE_DRAINING,
    AgentLiveness.LOST: agent_pb2.AGENT_STATE_LOST,
}


def agent_state(agent: AgentRecord, now: datetime, lease: timedelta) -> agent_pb2.AgentState:
    """What an admin sees: the agent's liveness as the wire enum."""
    return _WIRE_STATES[agent_liveness(agent, now, lease)]


class AgentRegistry(services_pb2_grpc.AgentRegistryServicer):
    """Registration, heartbeats and admin flags of node agents."""

    def __init__(
        self,
        store: JobStore,
        dispatcher: AgentEvents,
        heartbeat_interval_seconds: int,
        lease_seconds: int,
    ) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._heartbeat_interval = heartbeat_interval_seconds
        self._lease_seconds = lease_seconds

    @unary_rpc
    async def RegisterAgent(
        self, request: services_pb2.RegisterAgentRequest, context: Context
    ) -> services_pb2.RegisterAgentResponse:
        problems = []
        if not request.name.strip():
            problems.append("name: must not be empty")
        if not request.address.strip():
            problems.append("address: must not be empty")
        if request.max_concurrent_jobs < 1:
            problems.append("max_concurrent_jobs: must be at least 1")
        if problems:
            raise InvalidArgument("; ".join(problems))
        check_agent_name(request.name, current_principal(), "RegisterAgent")
        now = utcnow()
        agent = await self._store.upsert_agent(
            AgentRecord(
                name=request.name,
                address=request.address,
                capabilities=request.capabilities,
                max_concurrent_jobs=request.max_concurrent_jobs,
                registered_at=now,
                last_heartbeat=now,
                version=request.version,
            )
        )
        log.info(
            "agent registered agent=%s address=%s slots=%d capabilities=%s cordoned=%s",
            agent.name,
            agent.address,
            agent.max_concurrent_jobs,
            ",".join(sorted(agent.available_capabilities())),
            agent.cordoned,
        )
        await self._reconcile(agent.name, request.running_job_ids)
        self._dispatcher.wake()
        return services_pb2.RegisterAgentResponse(
            heartbeat_interval_seconds=self._heartbeat_interval,
            lease_seconds=self._lease_seconds,
        )

    @unary_rpc
    async def Heartbeat(
        self, request: services_pb2.HeartbeatRequest, context: Context
    ) -> services_pb2.HeartbeatResponse:
        check_agent_name(request.name, current_principal(), "Heartbeat")
        capabilities = request.capabilities if request.HasField("capabilities") else None
        known = await self._store.record_heartbeat(request.name, utcnow(), capabilities)
        if not known:
            log.info("heartbeat from unknown agent agent=%s: asking it to register", request.name)
        else:
            await self._reconcile(request.name, request.running_job_ids)
            # A heartbeat can make a stale agent ready again.
            self._dispatcher.wake()
        return services_pb2.HeartbeatResponse(
            heartbeat_interval_seconds=self._heartbeat_interval, reregister=not known
        )

    async def _reconcile(self, name: str, running_job_ids: Sequence[str]) -> None:
        """Cancel the agent's orphans, follow its unfollowed jobs (never fails the RPC)."""
        try:
            await self._dispatcher.reconcile_agent(name, running_job_ids)
        except Exception:
            log.exception("reconciling agent failed agent=%s", name)

    @unary_rpc
    async def ListAgents(
        self, request: services_pb2.ListAgentsRequest, context: Context
    ) -> services_pb2.ListAgentsResponse:
        agents = await self._store.list_agents()
        running = await self._store.running_jobs_by_agent()
        return services_pb2.ListAgentsResponse(
            agents=[self._info(a, running.get(a.name, [])) for a in agents]
        )

    @unary_rpc
    async def CordonAgent(
        self, request: services_pb2.CordonAgentRequest, context: Context
    ) -> agent_pb2.AgentInfo:
        # Uncordoning also ends a drain: the agent takes new work again.
        draining = False if not request.cordon else None
        agent = await self._store.set_agent_flags(
            request.name, cordoned=request.cordon, draining=draining
        )
        log.info("agent %s agent=%s", "cordoned" if request.cordon else "uncordoned", agent.name)
        if not request.cordon:
            self._dispatcher.wake()
        return await self._info_of(agent)

    @unary_rpc
    async def DrainAgent(
        self, request: services_pb2.DrainAgentRequest, context: Context
    ) -> agent_pb2.AgentInfo:
        if request.deadline_seconds < 0:
            raise InvalidArgument("deadline_seconds: must not be negative")
        deadline = None
        if request.deadline_seconds:
            deadline = utcnow() + timedelta(seconds=request.deadline_seconds)
        agent = await self._store.set_agent_flags(
            request.name, draining=True, drain_deadline=deadline
        )
        log.info("agent draining agent=%s deadline=%s", agent.name, deadline)
        return await self._info_of(agent)

    async def _info_of(self, agent: AgentRecord) -> agent_pb2.AgentInfo:
        return self._info(agent, await self._store.running_jobs_of(agent.name))

    def _info(self, agent: AgentRecord, running_job_ids: list[str]) -> agent_pb2.AgentInfo:
        lease = timedelta(seconds=self._lease_seconds)
        return agent.to_proto(agent_state(agent, utcnow(), lease), running_job_ids)
