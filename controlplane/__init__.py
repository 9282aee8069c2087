"""The h2k control plane: it stores jobs, places them on agents and relays their progress.

The life of a job: ``SubmitJob`` (:mod:`.job_service`, checked by :mod:`.submission` and
:mod:`.auth`) stores it through :mod:`.store` as CREATED -> VALIDATED -> QUEUED and wakes the
dispatcher. A scheduling pass (:mod:`.dispatch.scheduling_pass`, pure fitting rules in
:mod:`.placement` and :mod:`.capabilities`) picks an agent that registered through
:mod:`.agent_registry`; :mod:`.dispatch.assignment` moves the job to ASSIGNED and
:mod:`.dispatch.following` calls the agent's ``ExecuteJob`` and records every event it streams
(:mod:`.progress`), which :mod:`.events` fans out to ``WatchJob`` callers. Every tick
:mod:`.dispatch.supervision` applies the pure lease and retry rules (:mod:`.leases`,
:mod:`.retry`): a lost agent, a deadline passed or a failed attempt ends in RETRYING -> QUEUED
or a terminal state. With several replicas, :mod:`.ownership` leases each job's stream to one
replica and :mod:`.dispatch.takeover` adopts the streams of a replica that died.
"""
