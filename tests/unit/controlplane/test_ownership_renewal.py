"""Stream leases are renewed in a task of their own, beside the scheduler's grants: a grant
that commits after a renewal's UPDATE is not in the renewal's answer, and must still be held.

The store is a stand-in that lets the test order the two store calls; the real stores' lease
SQL is covered by tests/store/test_stream_grants_contract.py.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from controlplane.ownership import StreamOwnership


class _OrderedStore:
    """Answers renew_streams and grant_streams when the test says so."""

    replicated = True

    def __init__(self) -> None:
        self.renew_answer = asyncio.Event()
        self.grant_answer = asyncio.Event()
        self.renewed: list[str] = ["old"]

    async def renew_streams(self, owner: str, lease: timedelta) -> list[str]:
        await self.renew_answer.wait()
        return list(self.renewed)

    async def grant_streams(self, grants: dict[str, str], lease: timedelta) -> list[str]:
        await self.grant_answer.wait()
        return list(grants)


def test_a_grant_answered_while_a_renewal_was_under_way_stays_held():
    async def scenario() -> tuple[set[str], set[str]]:
        store = _OrderedStore()
        ownership = StreamOwnership(store, owner="me")  # type: ignore[arg-type]
        store.renew_answer.set()
        await ownership.renew()  # holds "old"
        store.renew_answer.clear()
        granting = asyncio.create_task(ownership.grant_many({"new": "me"}))
        await asyncio.sleep(0)  # the grant is sent first
        renewing = asyncio.create_task(ownership.renew())
        await asyncio.sleep(0)  # then the renewal
        store.grant_answer.set()  # the grant commits after the renewal's UPDATE ...
        await granting
        store.renew_answer.set()  # ... so the renewal answers without it
        renewed = await renewing
        return renewed, ownership.held()

    renewed, held = asyncio.run(scenario())
    assert renewed == {"old", "new"}
    assert held == {"old", "new"}


def test_a_lease_the_renewal_did_not_return_is_let_go():
    async def scenario() -> set[str]:
        store = _OrderedStore()
        ownership = StreamOwnership(store, owner="me")  # type: ignore[arg-type]
        store.renew_answer.set()
        store.grant_answer.set()
        await ownership.grant_many({"a": "me", "b": "me"})
        store.renewed = ["a"]  # "b"'s lease was taken over meanwhile
        await ownership.renew()
        return ownership.held()

    assert asyncio.run(scenario()) == {"a"}
