"""Quiet cycles cost no database round trip; cursors of unknown fate are read again."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from skytwin.fakegoogle import World
from skytwin.nursery import Restart
from skytwin.pipeline import poller as poller_module
from skytwin.pipeline.poller import PollSettings
from skytwin.store import StoreError
from skytwin.store.connections import cursor_states
from tests.fakegoogle.harness import EPOCH

from .harness import PipelineRig, event_ids, expected_ids, pipeline_rig, until

SETTINGS = PollSettings(interval_s=60.0, jitter_fraction=0.0, cursor_save_every_s=600.0)


class Borrows:
    """Counts the database connections borrowed from the rig's pool from now on.

    The test's own reads go through ``uncounted``.
    """

    def __init__(self, rig: PipelineRig, monkeypatch: pytest.MonkeyPatch) -> None:
        self.times: list[float] = []
        self.uncounted = rig.pool.connection

        def counting() -> Any:
            self.times.append(trio.current_time())
            return self.uncounted()

        monkeypatch.setattr(rig.pool, "connection", counting)

    async def stored_success(self, connection_id: int) -> dict[str, Any]:
        """Each connector's ``last_success_at`` as stored."""
        async with self.uncounted() as conn:
            states = await cursor_states(conn, connection_id)
        return {s.connector: s.last_success_at for s in states}


async def test_quiet_cycles_borrow_no_connection_until_the_heartbeat(
    clock: MockClock, world: World, database_url, tmp_path, monkeypatch
) -> None:
    async with pipeline_rig(world, database_url, tmp_path, settings=SETTINGS) as rig:
        ann = await rig.connect("ann@example.com")
        world.add_message(ann.account_email, sender="boss@work.example", subject="Plan")
        await rig.users.start_child(
            "account:ann", partial(rig.poller.poll_account, ann), restart=Restart.TRANSIENT
        )
        await until(lambda: len(rig.cycles_of(ann, "ok")) == 1, within=60)
        first = rig.cycles_of(ann)[0].started
        borrows = Borrows(rig, monkeypatch)
        borrowed = borrows.times
        saved_first = await borrows.stored_success(ann.connection_id)
        assert set(saved_first) == {"gmail", "calendar"}

        # Nine quiet cycles (60 .. 540 s after the first): Google is asked, the database is not.
        await until(lambda: len(rig.cycles_of(ann, "ok")) == 10, within=9 * 60)
        assert borrowed == []
        assert await borrows.stored_success(ann.connection_id) == saved_first

        # The cycle 600 s after the last write saves the unchanged cursors once (heartbeat).
        await until(lambda: len(rig.cycles_of(ann, "ok")) == 11, within=60)
        assert len(borrowed) == 1 and 600.0 <= borrowed[0] - first < 660.0
        saved_heartbeat = await borrows.stored_success(ann.connection_id)
        assert all(saved_heartbeat[c] > saved_first[c] for c in ("gmail", "calendar"))

        # New mail moves the Gmail cursor: stored at the next cycle, in one transaction.
        world.add_message(ann.account_email, sender="friend@x.example", subject="Lunch?")
        await until(lambda: len(rig.cycles_of(ann, "ok")) == 12, within=60)
        assert len(borrowed) == 2
        assert await rig.stored_ids(ann) == {
            "gmail": expected_ids(world, ann.account_email)["gmail"],
            "calendar": [],
        }

        # The in-memory status agrees with what the poller did.
        status = rig.poller.statuses[ann.connection_id]
        assert status.cursors is not None and set(status.cursors) == {"gmail", "calendar"}
        assert set(status.connector_success_at) == {"gmail", "calendar"}


async def test_a_failed_commit_makes_the_next_cycle_read_the_cursors_again(
    clock: MockClock, world: World, database_url, tmp_path, monkeypatch
) -> None:
    real_ingest = poller_module.ingest_signals
    failures = [0]

    async def ingest_then_lose_the_answer(conn: Any, *args: Any, **kwargs: Any) -> Any:
        # The first commit with signals fails inside its transaction (as when the
        # connection breaks under it): the poller must not trust its cursors in memory.
        result = await real_ingest(conn, *args, **kwargs)
        if failures[0] == 0:
            failures[0] += 1
            raise StoreError("connection lost before the answer")
        return result

    monkeypatch.setattr(poller_module, "ingest_signals", ingest_then_lose_the_answer)
    async with pipeline_rig(world, database_url, tmp_path, settings=SETTINGS) as rig:
        ann = await rig.connect("ann@example.com")
        world.add_message(ann.account_email, sender="boss@work.example", subject="Plan")
        world.add_event(
            ann.account_email,
            summary="Review",
            organizer="lead@work.example",
            start=EPOCH.replace(hour=15),
            end=EPOCH.replace(hour=16),
        )
        await rig.users.start_child(
            "account:ann", partial(rig.poller.poll_account, ann), restart=Restart.TRANSIENT
        )
        await until(lambda: len(rig.cycles_of(ann)) == 1, within=60)
        assert rig.cycles_of(ann)[0].result == "database_error"
        assert rig.poller.statuses[ann.connection_id].cursors is None

        borrowed = Borrows(rig, monkeypatch).times
        await until(lambda: len(rig.cycles_of(ann, "ok")) == 1, within=60)
        # Read the cursors again (they were unknown), then store the signals once more:
        # the transaction was rolled back, so nothing is doubled and nothing lost.
        assert len(borrowed) == 2
        stored = await rig.stored_ids(ann)
        expected = expected_ids(world, ann.account_email)
        assert stored["gmail"] == expected["gmail"]
        assert event_ids(stored["calendar"]) == event_ids(expected["calendar"])
        assert len(stored["calendar"]) == len(set(stored["calendar"]))
