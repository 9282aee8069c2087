"""The fault scenarios, each a function of a fresh :class:`FaultCluster`.

Each starts what it needs, injects its fault with real signals (SIGKILL for crashes), checks
what a user would check, and returns a few measurements. The tests run each once; the soak
script (``bench/soak.py``) loops them.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from devsupport.cluster import BIN, wait_for
from devsupport.images import write_random_raw
from protocol.errors import H2KError
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc
from tests.support.faults import (
    CONTROLPLANE_ARGS,
    FaultCluster,
    assert_gap_free,
    elapsed_since,
    history,
    state,
    temporary_files,
    tools_writing_to,
    wait_clean,
)

SMALL_IMAGE_MIB = 32


def _start(c: FaultCluster, *agents: str, agent_args: tuple[str, ...] = ()) -> None:
    c.start_controlplane()
    for name in agents:
        c.start_agent(name, *agent_args)


def assert_clean(directory: Path) -> None:
    """Right after an agent is back (it cleans up before it registers): nothing is left."""
    assert not temporary_files(directory), temporary_files(directory)
    assert not tools_writing_to(directory), "an orphaned qemu-img still writes there"


def _running_on(c: FaultCluster, job_id: str, agent: str, percent: float = 10) -> job_pb2.Job:
    job = c.wait_progress(job_id, percent)
    assert job.assigned_agent == agent, f"{job_id} runs on {job.assigned_agent}, not {agent}"
    return job


# --- control plane restarts -----------------------------------------------------------


def controlplane_killed_during_jobs(c: FaultCluster, jobs: int = 20) -> dict[str, Any]:
    """Test 1: kill -9 the control plane while convert jobs run on two agents; restart it.

    Every job completes; its stored events are seq 1..N and equal the agent's own log.
    """
    _start(c, "node-1", "node-2")
    write_random_raw(c.input_dir / "small.img", SMALL_IMAGE_MIB)
    ids = [f"many-{i:02d}" for i in range(jobs)]
    for job_id in ids:
        c.submit(c.convert_spec(job_id, source="small.img", output=c.output_dir / job_id))

    def mid_run() -> bool:
        states = Counter(state(c.job(j)) for j in ids)
        return states["COMPLETED"] >= 3 and states["RUNNING"] + states["PROGRESSING"] >= 2

    wait_for(mid_run, timeout=120, interval=0.1, what="some jobs done, some running")
    done_before = sum(state(c.job(j)) == "COMPLETED" for j in ids)
    c.controlplane.kill()  # type: ignore[union-attr]
    started = time.monotonic()
    c.restart_controlplane()
    restart_seconds = elapsed_since(started)
    for job_id in ids:
        job = c.wait_state(job_id, "COMPLETED", timeout=180)
        assert job.attempt == 1, f"{job_id} needed {job.attempt} attempts"
        stored = c.api.events(job_id)
        assert_gap_free([e.seq for e in stored], job_id)
        assert stored == c.agent_log(job.assigned_agent, job_id), f"{job_id}: store != agent log"
        assert not temporary_files(c.output_dir / job_id)
    return {"jobs": jobs, "completed_before_kill": done_before, "restart_s": restart_seconds}


def watcher_through_controlplane_restart(c: FaultCluster, sig: int) -> dict[str, Any]:
    """Test 3: watchers connected through a control-plane restart see every event once.

    One watcher is the Python client, the other the real ``h2kctl watch``.
    """
    _start(c, "node-1")
    job_id = "watched"
    c.submit(c.convert_spec(job_id))
    seen: list[job_pb2.ProgressEvent] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            seen.extend(c.api.watch(job_id))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    cli = subprocess.Popen(
        [str(BIN / "h2kctl"), "--server", c.address, "--insecure", "watch", job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    cli_lines: list[str] = []
    reader = threading.Thread(target=lambda: cli_lines.extend(cli.stdout or ()), daemon=True)
    reader.start()
    c.wait_progress(job_id, 15)
    # Both watchers are connected (h2kctl gives up at once if its first call fails).
    wait_for(lambda: seen and cli_lines, timeout=30, what="both watchers following")
    before = len(seen)
    if sig == signal.SIGKILL:
        c.controlplane.kill()  # type: ignore[union-attr]
    else:
        assert c.controlplane.stop(sig) == 0  # type: ignore[union-attr]
    c.restart_controlplane()
    watcher.join(120)
    cli.wait(120)
    reader.join(10)
    out, err = "".join(cli_lines), (cli.stderr.read() if cli.stderr else "")
    assert not errors, errors
    assert cli.returncode == 0, out + err
    stored = c.api.events(job_id)
    assert_gap_free([e.seq for e in seen], "watcher")
    assert seen == stored
    assert seen[-1].state == job_pb2.JOB_STATE_COMPLETED
    cli_seqs = [int(line.split()[0][4:]) for line in out.splitlines() if line.startswith("seq=")]
    assert cli_seqs == [e.seq for e in stored], out
    return {"events": len(seen), "seen_before_restart": before}


# --- agents lost, restarted, drained, stopped -----------------------------------------


def agent_killed_with_retry_left(c: FaultCluster) -> dict[str, Any]:
    """Test 2a: kill -9 an agent mid-convert; the retry completes on the second agent; once
    the first agent is back no temporary file or orphaned qemu-img is left."""
    _start(c, "node-1", "node-2")
    c.api.cordon("node-2")  # so that the first attempt lands on node-1
    job_id = "retried"
    c.submit(c.convert_spec(job_id, retry_count=1))
    at = _running_on(c, job_id, "node-1").progress_percent
    c.agents["node-1"].kill()
    killed = time.monotonic()
    c.api.cordon("node-2", cordon=False)
    job = c.wait_state(job_id, "COMPLETED", timeout=120)
    recovered_s = elapsed_since(killed)
    assert job.assigned_agent == "node-2" and job.attempt == 2
    retrying = [h for h in history(job) if h[0] == "RETRYING"]
    assert len(retrying) == 1, history(job)
    assert "agent node-1 lost during convert at" in retrying[0][1], retrying
    assert retrying[0][2] == 1, "the failed attempt is numbered 1"
    assert_gap_free(c.stored_seqs(job_id), job_id)
    assert (c.output_dir / "slow.qcow2").exists()
    c.restart_agent("node-1")
    assert_clean(c.output_dir)
    return {"killed_at_percent": at, "completed_after_kill_s": recovered_s}


def agent_killed_without_retry(c: FaultCluster, restart_at_once: bool) -> dict[str, Any]:
    """Test 2b: with no retry left the job FAILS naming the agent; nothing is left behind
    once the agent is back. ``restart_at_once``: the agent is back before its lease ran out
    (it reports the interruption itself); otherwise the lease runs out first."""
    _start(c, "node-1")
    job_id = "unlucky"
    c.submit(c.convert_spec(job_id, retry_count=0))
    _running_on(c, job_id, "node-1")
    c.agents["node-1"].kill()
    if restart_at_once:
        c.restart_agent("node-1")
    job = c.wait_state(job_id, "FAILED", timeout=60)
    if not restart_at_once:
        assert temporary_files(c.output_dir), "the killed agent's temporary file is still there"
        c.restart_agent("node-1")
    error = job.result.error
    assert error.code == "AGENT_LOST" and error.phase == "convert", error
    assert error.message.startswith("agent node-1 lost during convert at "), error.message
    assert ("(the agent restarted)" in error.message) == restart_at_once, error.message
    assert_gap_free(c.stored_seqs(job_id), job_id)
    assert_clean(c.output_dir)
    assert not (c.output_dir / "slow.qcow2").exists()
    return {"message": error.message}


def drain_with_running_job(c: FaultCluster) -> dict[str, Any]:
    """Test 4: drain an agent running a job: no new work lands on it, the job finishes."""
    _start(c, "node-1", "node-2")
    write_random_raw(c.input_dir / "small.img", SMALL_IMAGE_MIB)
    c.submit(c.convert_spec("long"))
    _running_on(c, "long", "node-1", percent=5)
    c.h2kctl("agents", "drain", "node-1", "--deadline", "2h", check=True)
    others = [f"after-drain-{i}" for i in range(3)]
    for job_id in others:
        c.submit(c.convert_spec(job_id, source="small.img", output=c.output_dir / job_id))
    for job_id in others:
        assert c.wait_state(job_id, "COMPLETED").assigned_agent == "node-2"
    long = c.wait_state("long", "COMPLETED", timeout=120)
    assert long.assigned_agent == "node-1" and long.attempt == 1
    node1 = next(a for a in c.api.agents() if a.name == "node-1")
    assert node1.state == 3 and not node1.running_job_ids  # DRAINING, nothing left
    return {}


def drain_deadline_requeues(c: FaultCluster) -> dict[str, Any]:
    """Past the drain deadline the running job is cancelled there and requeued (without
    using up a retry: retry_count is 0) and completes on another agent."""
    _start(c, "node-1", "node-2")
    c.api.cordon("node-2")
    c.submit(c.convert_spec("evicted", retry_count=0))
    _running_on(c, "evicted", "node-1", percent=5)
    c.api.cordon("node-2", cordon=False)
    c.h2kctl("agents", "drain", "node-1", "--deadline", "1s", check=True)
    job = c.wait_state("evicted", "COMPLETED", timeout=120)
    assert job.assigned_agent == "node-2" and job.attempt == 2
    requeued = [h for h in history(job) if h[0] == "RETRYING"]
    assert requeued and requeued[0][1].startswith("requeued: attempt 1: "), history(job)
    assert_gap_free(c.stored_seqs("evicted"))
    wait_clean(c.output_dir)
    return {}


def sigterm_agent_within_grace(c: FaultCluster) -> dict[str, Any]:
    """Test 5: SIGTERM on an agent running a job: the job finishes within the grace period,
    then the agent exits 0."""
    _start(c, "node-1", agent_args=("--shutdown-grace-seconds", "60"))
    c.submit(c.convert_spec("graceful"))
    _running_on(c, "graceful", "node-1")
    agent = c.agents["node-1"]
    sent = time.monotonic()
    agent.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    job = c.wait_state("graceful", "COMPLETED", timeout=60)
    assert job.assigned_agent == "node-1" and job.attempt == 1
    wait_for(lambda: not agent.alive(), timeout=30, what="node-1 to exit")
    assert agent.popen.returncode == 0  # type: ignore[union-attr]
    return {"exit_after_sigterm_s": elapsed_since(sent)}


def sigterm_agent_past_grace(c: FaultCluster) -> dict[str, Any]:
    """SIGTERM with a grace period shorter than the job: the job is cancelled there and
    requeued to another agent, where it completes."""
    _start(c, "node-1", "node-2", agent_args=("--shutdown-grace-seconds", "1"))
    c.api.cordon("node-2")
    c.submit(c.convert_spec("interrupted", retry_count=0))
    _running_on(c, "interrupted", "node-1")
    c.api.cordon("node-2", cordon=False)
    assert c.agents["node-1"].stop(signal.SIGTERM) == 0
    job = c.wait_state("interrupted", "COMPLETED", timeout=120)
    assert job.assigned_agent == "node-2" and job.attempt == 2
    requeued = [h for h in history(job) if h[0] == "RETRYING"]
    assert requeued and "agent node-1 shut down during convert" in requeued[0][1], history(job)
    wait_clean(c.output_dir)
    return {}


def job_times_out(c: FaultCluster) -> dict[str, Any]:
    """Test 6: a job with a short timeout on a slow conversion fails with phase and code
    TIMEOUT and leaves nothing behind. (--timeout-scale 0.02: 60 s become 1.2 s.)"""
    _start(c, "node-1", agent_args=("--timeout-scale", "0.02"))
    c.submit(c.convert_spec("too-slow", timeout_seconds=60, retry_count=2))
    job = c.wait_state("too-slow", "FAILED", timeout=60)
    error = job.result.error
    assert (error.code, error.phase) == ("TIMEOUT", "convert"), error
    assert job.attempt == 1, "a timeout is not retried"
    wait_clean(c.output_dir)
    assert list(c.output_dir.iterdir()) == []
    return {}


# --- durability and back-pressure -----------------------------------------------------


def submissions_survive_kill(c: FaultCluster, count: int = 1000, seed: int | None = None) -> dict:
    """Test 7: submit ``count`` jobs from 4 threads; kill -9 the control plane after a random
    number of acknowledgements; restart: every acknowledged job is stored exactly once."""
    rng = random.Random(seed)
    kill_after = rng.randint(count // 20, count - count // 20)
    c.start_controlplane()
    docs = [c.convert_spec(f"burst-{i:04d}") for i in range(count)]
    acked: list[str] = []
    lock = threading.Lock()

    def submit_share(share: list[dict[str, Any]]) -> None:
        for doc in share:
            try:
                c.api.submit(doc)
            except H2KError:
                return  # the control plane is gone: stop this burst
            with lock:
                acked.append(doc["job_id"])

    threads = [threading.Thread(target=submit_share, args=(docs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked) >= kill_after, timeout=120, interval=0.001, what="acks")
    c.controlplane.kill()  # type: ignore[union-attr]
    for t in threads:
        t.join(60)
    c.restart_controlplane()
    stored = [j.spec.job_id for j in c.api.list(page_size=1000)]
    assert len(stored) == len(set(stored)), "a job is stored twice"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged jobs lost: {sorted(missing)[:5]}"
    for job in c.api.list(page_size=1000):
        assert state(job) == "QUEUED" and [h[0] for h in history(job)] == ["VALIDATED", "QUEUED"]
    created = sum(c.api.submit(doc).created for doc in docs)
    assert created == count - len(stored), "resubmission created a stored job again"
    assert len(c.api.list(page_size=1000)) == count
    return {"acked_before_kill": len(acked), "stored": len(stored)}


def slow_watcher_does_not_hold_anyone_up(c: FaultCluster) -> dict[str, Any]:
    """A watcher that reads nothing (tiny flow-control window, buffer of 4 events) neither
    slows the job nor another watcher; it catches up by seq afterwards, missing nothing."""
    c.start_controlplane(*CONTROLPLANE_ARGS, "--watch-buffer", "4")
    c.start_agent("node-1")
    job_id = "watched-slowly"
    c.submit(c.convert_spec(job_id))
    options = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    with grpc.insecure_channel(c.address, options=options) as channel:
        stub = services_pb2_grpc.JobServiceStub(channel)
        slow = stub.WatchJob(services_pb2.WatchJobRequest(job_id=job_id))
        first = next(slow)  # connected; from now on it reads nothing until the job is done
        lags: list[float] = []
        for event in c.api.watch(job_id):
            lags.append(time.time() - event.time.ToDatetime().timestamp())
        rest = list(slow)
    stored = c.api.events(job_id)
    assert [first, *rest] == stored, "the slow watcher missed or repeated an event"
    assert_gap_free([e.seq for e in stored])
    worst = max(lags[1:])
    assert worst < 2.0, f"the prompt watcher lagged {worst:.2f}s behind"
    assert "watcher lagged" in c.controlplane.log()  # type: ignore[union-attr]
    return {"events": len(stored), "prompt_watcher_worst_lag_s": round(worst, 3)}
