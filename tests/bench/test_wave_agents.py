"""The wave benchmark's fake agent runs a job on its own: a dropped stream does not stop it,
and AttachJob streams it again from a seq, as ``h2k-agent`` does (a replica that takes a
job over re-attaches)."""

from __future__ import annotations

import asyncio

import grpc

from bench.wave_agents import AgentTally, WaveAgent, WavePlan
from protocol.gen.h2k.v1 import job_pb2, services_pb2, services_pb2_grpc


def test_a_job_goes_on_after_its_stream_drops_and_attach_resumes_it_after_a_seq():
    async def scenario() -> tuple[list[int], list[int], int, grpc.StatusCode]:
        plan = WavePlan(control_planes=("unused",), slots=2, interval=0.05, job_seconds=0.3)
        tally = AgentTally()
        server = grpc.aio.server()
        services_pb2_grpc.add_WorkerServicer_to_server(WaveAgent("a1", plan, tally), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = services_pb2_grpc.WorkerStub(channel)
                spec = job_pb2.JobSpec(job_id="j1")
                call = stub.ExecuteJob(services_pb2.ExecuteJobRequest(spec=spec, attempt=1))
                first = []
                async for event in call:
                    first.append(event.seq)
                    if len(first) == 2:
                        call.cancel()  # the replica following it went away
                        break
                attach = stub.AttachJob(services_pb2.AttachJobRequest(job_id="j1", after_seq=2))
                rest = [e.seq async for e in attach]
                last_state = tally.completed
                unknown = stub.AttachJob(services_pb2.AttachJobRequest(job_id="nope"))
                try:
                    [e async for e in unknown]
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                return first, rest, last_state, code
        finally:
            await server.stop(None)

    first, rest, completed, unknown = asyncio.run(scenario())
    assert first == [1, 2]
    assert rest == list(range(3, 8))  # RUNNING, 5 PROGRESSING, COMPLETED: seq 1..7
    assert completed == 1
    assert unknown is grpc.StatusCode.NOT_FOUND
