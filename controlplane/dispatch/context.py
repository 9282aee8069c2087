"""What every part of dispatching shares: the store, the channels, the recorder, the leases."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.dispatch.cancellation import AgentCancels
from controlplane.dispatch.policy import DispatchPolicy
from controlplane.dispatch.requeue import Requeuer
from controlplane.dispatch.streams import StreamTasks
from controlplane.ownership import StreamOwnership
from controlplane.progress import ProgressRecorder
from controlplane.store import JobStore
from controlplane.worker_client import WorkerClients


@dataclass(frozen=True)
class DispatchContext:
    """The shared parts, made once by the dispatcher and handed to each concern."""

    store: JobStore
    clients: WorkerClients
    recorder: ProgressRecorder
    ownership: StreamOwnership
    policy: DispatchPolicy
    streams: StreamTasks
    cancels: AgentCancels
    requeuer: Requeuer
