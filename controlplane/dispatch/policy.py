"""The timings of dispatching: placement holdoffs, stream re-attaching, leases, retries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from controlplane.leases import DEFAULT_TIMEOUT_MARGIN, LeasePolicy
from controlplane.ownership import DEFAULT_STREAM_LEASE
from controlplane.placement import DEFAULT_LEASE


@dataclass(frozen=True)
class DispatchPolicy:
    """Timings of the dispatcher, leases, deadlines and retries."""

    tick_seconds: float = 1.0
    lease: timedelta = DEFAULT_LEASE
    # Pauses before each AttachJob attempt after a stream broke (the first is immediate);
    # the last one repeats until the stream is back or the agent's lease runs out.
    reattach_delays: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0)
    # How long a job the agent did not accept stays out of scheduling.
    requeue_holdoff: timedelta = timedelta(seconds=2)
    timeout_margin: timedelta = DEFAULT_TIMEOUT_MARGIN
    timeout_scale: float = 1.0
    retry_backoff: timedelta = timedelta(seconds=5)
    # How often an unconfirmed cancel is sent again.
    cancel_resend: timedelta = timedelta(seconds=5)
    # Several replicas: how long a stream (or the scheduler role) stays with a replica
    # that stopped renewing it (database time).
    stream_lease: timedelta = DEFAULT_STREAM_LEASE

    def leases(self) -> LeasePolicy:
        return LeasePolicy(self.lease, self.timeout_margin, self.timeout_scale)
