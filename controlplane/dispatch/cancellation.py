"""Asking agents to cancel jobs: once on request, again until it is confirmed.

A cancel is only a request to the agent: the CANCELLED state is recorded from the agent's
terminal event (or when its lease runs out). Sends that follow from the control plane's own
decisions go out in the background so a slow agent never holds up a scheduling pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

import grpc

from controlplane.dispatch.streams import FollowedStream
from controlplane.models import JobRecord
from controlplane.store import JobStore
from controlplane.worker_client import WorkerClients
from protocol.conversion import utcnow
from protocol.errors import NotFound

log = logging.getLogger(__name__)


class AgentCancels:
    """Sends cancels to agents and remembers when each job was last asked."""

    def __init__(self, store: JobStore, clients: WorkerClients, resend: timedelta) -> None:
        self._store = store
        self._clients = clients
        self._resend = resend
        self._sent: dict[str, datetime] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, stream: FollowedStream, reason: str) -> None:
        """Ask the agent to cancel the job, in the background (the answer comes as events)."""
        if not stream.address:
            return
        stream.cancel_sent = True

        async def send() -> None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._clients.cancel(stream.address, stream.job_id, reason)
                log.info("cancel sent job_id=%s agent=%s", stream.job_id, stream.agent)

        self._spawn(send(), name=f"h2k-cancel-{stream.job_id}")

    async def ask(self, job: JobRecord, reason: str) -> bool:
        """Ask the job's agent to cancel it now; False when the agent could not be asked.

        Either way the CANCELLED state arrives later: as the agent's terminal event once it
        cleaned up, or when its lease runs out. An unconfirmed cancel is sent again.
        """
        try:
            agent = await self._store.get_agent(job.assigned_agent or "")
            response = await self._clients.cancel(agent.address, job.job_id, reason)
        except NotFound:
            return False
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "agent cancel failed job_id=%s agent=%s code=%s",
                job.job_id,
                job.assigned_agent,
                exc.code().name,
            )
            return False
        self._sent[job.job_id] = utcnow()
        return response.found

    def due(self, job_id: str, now: datetime) -> bool:
        """Whether an unconfirmed cancel of ``job_id`` is to be sent (again) now."""
        last = self._sent.get(job_id)
        if last is not None and now - last < self._resend:
            return False
        self._sent[job_id] = now
        return True

    def forget_all(self) -> None:
        """No job is active any more: nothing is waiting for a confirmation."""
        self._sent.clear()

    def tasks(self) -> list[asyncio.Task[None]]:
        """The sends still in flight (to cancel on stop)."""
        return list(self._tasks)

    def _spawn(self, body: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(body, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
