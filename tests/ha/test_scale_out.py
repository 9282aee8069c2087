"""Relaying agent streams spreads over the replicas; a dead replica's streams are adopted.

The scheduler grants each new job's stream to the live replica with the fewest streams; that
replica starts the job and records its events. Evidence is what an operator would look at:
the stream leases in the database and the replicas' own log lines, then each job's history,
its stored events against the agent's own log, and how often the agent started it.
"""

from __future__ import annotations

import re
import time
from collections import Counter

from devsupport.cluster import wait_for
from tests.ha.harness import STREAM_LEASE_SECONDS, ReplicaCluster
from tests.support.faults import state

REPLICAS = ("cp-a", "cp-b")


def _start_replicas(c: ReplicaCluster) -> None:
    """cp-a first, so it holds the scheduler role."""
    c.start_replica("cp-a")
    wait_for(lambda: c.scheduler() == "cp-a", timeout=15, what="cp-a schedules")
    c.start_replica("cp-b")


def _tiny(c: ReplicaCluster, job_id: str) -> dict:
    return c.convert_spec(job_id, source="tiny.img", output=c.output_dir / job_id)


def _relays(c: ReplicaCluster) -> Counter[str | None]:
    """How many assignments the scheduler (cp-a) left to each replica, by its log lines."""
    line = r"job assigned job_id=\S+ agent=\S+ attempt=\d+ relay=(\S+)"
    owners = re.findall(line, c.replicas["cp-a"].log())
    return Counter(c._replica_of(owner) for owner in owners)


def test_two_replicas_with_agents_registered_with_each_both_relay_streams(
    replicas: ReplicaCluster,
) -> None:
    c = replicas
    _start_replicas(c)
    for replica, agent in (("cp-a", "node-1"), ("cp-b", "node-2")):
        c.point_agents_at(replica)
        c.start_agent(agent, max_jobs=3)
    ids = [f"wave-{i:03d}" for i in range(60)]
    for n, job_id in enumerate(ids):
        assert c.api_of(REPLICAS[n % 2]).submit(_tiny(c, job_id)).created

    def all_done() -> bool:
        states = Counter(state(c.api_of("cp-a").get(j)) for j in ids)
        assert states["FAILED"] == 0 and states["CANCELLED"] == 0, states
        return states["COMPLETED"] == len(ids)

    wait_for(all_done, timeout=180, interval=1.0, what="60 jobs completed")
    for n, job_id in enumerate(ids):
        c.assert_ran_once_with_full_events(job_id, c.api_of(REPLICAS[n % 2]))
    relays = _relays(c)
    assert sum(relays.values()) >= len(ids), relays
    # Least loaded first: neither replica relays much more than the other.
    assert relays["cp-a"] >= len(ids) // 4 and relays["cp-b"] >= len(ids) // 4, relays
    started_by_b = c.replicas["cp-b"].log().count("relaying granted job")
    assert started_by_b >= relays["cp-b"], (started_by_b, relays)


def test_killing_a_relaying_replica_mid_wave_hands_its_streams_to_the_other(
    replicas: ReplicaCluster,
) -> None:
    c = replicas
    _start_replicas(c)
    c.point_agents_at("cp-a")  # the agents outlive cp-b
    for agent in ("node-1", "node-2"):
        c.start_agent(agent, max_jobs=2)
    running = [f"slow-{i}" for i in range(4)]
    queued = [f"later-{i}" for i in range(4)]
    for n, job_id in enumerate(running):
        c.api_of(REPLICAS[n % 2]).submit(c.convert_spec(job_id, output=c.output_dir / job_id))
    for job_id in running:
        c.wait_progress(job_id, 5)
    owners = wait_for(
        lambda: (o := c.stream_owners()) and set(o.values()) == set(REPLICAS) and o,
        timeout=15,
        what="both replicas relay",
    )
    of_b = sorted(j for j, r in owners.items() if r == "cp-b")
    # Every slot is busy: these wait and are placed while cp-b is dying or dead.
    for job_id in queued:
        c.api_of("cp-a").submit(_tiny(c, job_id))
    c.replicas["cp-b"].kill()
    killed = time.monotonic()
    wait_for(
        lambda: all(
            c.stream_owners().get(j) == "cp-a" or state(c.api_of("cp-a").get(j)) == "COMPLETED"
            for j in of_b
        ),
        timeout=30,
        interval=0.1,
        what="cp-a took over cp-b's streams",
    )
    takeover_seconds = time.monotonic() - killed
    assert takeover_seconds < STREAM_LEASE_SECONDS + 5, takeover_seconds
    api = c.api_of("cp-a")
    for job_id in running + queued:
        c.wait_state(job_id, "COMPLETED", timeout=120)
        c.assert_ran_once_with_full_events(job_id, api)
    log = c.replicas["cp-a"].log()
    # Adopted on cp-a's tick (the lease ran out) or on an agent's heartbeat (a running job
    # of the agent that nobody follows).
    adopted = [
        j
        for j in of_b
        if f"taking over stream job_id={j}" in log or f"following unfollowed job job_id={j}" in log
    ]
    assert adopted == of_b, (adopted, of_b)
    print(f"takeover_seconds={takeover_seconds:.1f} taken_from_b={of_b}")
