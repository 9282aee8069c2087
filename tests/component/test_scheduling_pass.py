"""A scheduling pass over a long queue: the right jobs start, every other job says why it
waits, and jobs no agent can take never hold up the ones that fit."""

from __future__ import annotations

from protocol.gen.h2k.v1 import job_pb2, services_pb2

STARTED = {
    job_pb2.JOB_STATE_ASSIGNED,
    job_pb2.JOB_STATE_RUNNING,
    job_pb2.JOB_STATE_PROGRESSING,
}
NBD = {"capability_requirements": {"needs_nbd": True}}


async def all_jobs(cp) -> dict[str, job_pb2.Job]:
    listed = await cp.jobs.ListJobs(services_pb2.ListJobsRequest(page_size=1000))
    return {job.spec.job_id: job for job in listed.jobs}


async def test_a_pass_starts_the_first_jobs_in_order_and_says_why_the_rest_wait(
    start_control_plane, start_worker, kit
):
    async with start_worker("node-1") as agent, start_control_plane() as cp:
        # Jobs no agent can take come first in the queue: they must not hold up the others.
        for i in range(2):
            await cp.submit(kit.job_document(f"nbd-{i}", execution_policy={"priority": 1}, **NBD))
        for i in range(40):
            priority = 2 if i in (17, 33) else 5
            await cp.submit(
                kit.job_document(f"job-{i:02d}", execution_policy={"priority": priority})
            )
        await cp.register("node-1", agent.address, slots=3)

        async def settled() -> dict[str, job_pb2.Job] | None:
            jobs = await all_jobs(cp)
            waiting = [j for j in jobs.values() if j.state == job_pb2.JOB_STATE_QUEUED]
            started = [j for j in jobs.values() if j.state in STARTED]
            if len(started) == 3 and all(j.queue_reason for j in waiting):
                return jobs
            return None

        jobs = await kit.eventually(settled, "three jobs started and reasons for the rest")
        agent.worker.release()

        async def plain_done() -> bool:
            done = [
                j for j in (await all_jobs(cp)).values() if j.state == job_pb2.JOB_STATE_COMPLETED
            ]
            return len(done) == 40

        await kit.eventually(plain_done, "every job that fits to complete")
        nbd = [await cp.job(f"nbd-{i}") for i in range(2)]

    started = sorted(j.spec.job_id for j in jobs.values() if j.state in STARTED)
    assert started == ["job-00", "job-17", "job-33"]  # priority first, then age
    busy = {
        j.queue_reason
        for j in jobs.values()
        if j.spec.job_id.startswith("job-") and j.state == job_pb2.JOB_STATE_QUEUED
    }
    assert busy == {"the fitting agent is busy (3/3 slots used)"}
    assert [j.state for j in nbd] == [job_pb2.JOB_STATE_QUEUED] * 2
    assert {j.queue_reason for j in nbd} == {"no agent has nbd"}
