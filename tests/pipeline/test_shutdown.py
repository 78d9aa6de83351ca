"""Graceful shutdown of the users supervisor while a poll cycle is in flight (virtual time).

The fake Google holds one request of the cycle, so the cycle is really in
flight (an HTTP request open at Google) when the stop is requested.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import trio
from trio.testing import MockClock

from skytwin.fakegoogle import Fault, World
from skytwin.nursery import ChildStopped, Restart, add_hook
from skytwin.pipeline.housekeeping import child_name
from skytwin.pipeline.poller import PollSettings
from skytwin.store.connections import Account

from .harness import PipelineRig, pipeline_rig

GRACE = 5.0
INTERVAL = 60.0
HELD = "gmail.users.messages.list"  # the first full sync's second Gmail call


class Midpoint(random.Random):
    """A poller "random" source without randomness: every draw is its range's midpoint."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


async def start_polling(rig: PipelineRig, account: Account) -> None:
    """Start the account's poll task under the users supervisor, as discovery does."""
    await rig.users.start_child(
        child_name(account), partial(rig.poller.poll_account, account), restart=Restart.TRANSIENT
    )


async def hold_first_sync(rig: PipelineRig, account: Account) -> None:
    """Make the fake hold the account's first Gmail sync; return once the request is held."""
    plan = rig.world.faults("gmail", account.account_email)
    plan.add(Fault.slow(1000.0, operation=HELD))
    profile_read = trio.Event()  # the call just before the held one
    rig.world.on_next("gmail.users.getProfile", lambda world: profile_read.set())
    await start_polling(rig, account)
    with trio.fail_after(INTERVAL + 10):
        await profile_read.wait()
        # The fault is taken when the request arrives at the fake; nothing signals that.
        while plan.script:  # noqa: ASYNC110
            await trio.sleep(0.001)


async def stored_for(rig: PipelineRig, account: Account) -> tuple[int, int]:
    """(cursor rows, signals) the account has in the database."""
    async with rig.pool.connection() as conn:
        cur = await conn.execute(
            "select (select count(*) from connector_cursors where connection_id = %s) as cursors,"
            " (select count(*) from signals where user_id = %s) as signals",
            (account.connection_id, account.user_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["cursors"]), int(row["signals"])


async def request_gone(world: World, email: str) -> list[tuple[int, str]]:
    """The held request's log entries, once the fake has noticed the client hung up."""
    with trio.fail_after(10):
        # Logged when the fake's server reads the hang-up off its socket; nothing signals that.
        while not (records := world.requests(HELD, account=email)):  # noqa: ASYNC110
            await trio.sleep(0.01)
    return [(r.status, r.note) for r in records]


async def test_shutdown_cancels_the_cycle_in_flight_within_the_grace_and_keeps_its_cursor(
    clock: MockClock, world: World, database_url: str, tmp_path: Path
) -> None:
    async with pipeline_rig(
        world,
        database_url,
        tmp_path,
        settings=PollSettings(interval_s=INTERVAL),
        shutdown_grace_s=GRACE,
    ) as rig:
        ann = await rig.connect("ann@example.com")
        world.add_message(ann.account_email, sender="news@shop.example", subject="Newsletter")
        await hold_first_sync(rig, ann)
        await trio.sleep(1.0)  # the cycle has been in flight for a while (virtual time)
        assert rig.cycles_of(ann) == []

        stopping = trio.current_time()
        await rig.users.shutdown()

        # The cycle never looks at the stop request: it runs out the grace, then is cancelled.
        assert round(trio.current_time() - stopping, 9) == GRACE
        assert [c.result for c in rig.cycles_of(ann)] == ["cancelled"]
        assert rig.users.child_names() == [child_name(ann)]
        assert rig.users.snapshot().children[0].state.value == "stopped"
        # Cancelled means cancelled at Google too: the held request's client hung up.
        assert await request_gone(world, ann.account_email) == [(0, "client-gone")]
        # Nothing was committed: no cursor, no signal (the mail is found on the next start).
        assert await stored_for(rig, ann) == (0, 0)
        assert world.calls[(HELD, ann.account_email)] == 0


@contextmanager
def users_stopped_at() -> Iterator[dict[str, float]]:
    """Trio time at which each child of the "users" supervisor stopped, while inside."""
    stopped_at: dict[str, float] = {}

    def on_event(event: object) -> None:
        if isinstance(event, ChildStopped) and event.supervisor == "users":
            stopped_at[event.child] = trio.current_time()

    remove_hook = add_hook(on_event)
    try:
        yield stopped_at
    finally:
        remove_hook()


async def test_an_idle_account_stops_at_once(
    clock: MockClock, world: World, database_url: str, tmp_path: Path
) -> None:
    with users_stopped_at() as stopped_at:
        async with pipeline_rig(
            world,
            database_url,
            tmp_path,
            settings=PollSettings(interval_s=INTERVAL),
            shutdown_grace_s=GRACE,
        ) as rig:
            rig.poller.rng = Midpoint()
            bob = await rig.connect("bob@example.com")
            bob_polled = trio.Event()
            rig.poller.cycle_hooks.append(lambda account, *_: bob_polled.set())
            await start_polling(rig, bob)
            with trio.fail_after(INTERVAL):
                await bob_polled.wait()
            bob_due = rig.poller.statuses[bob.connection_id].next_due
            assert bob_due is not None
            # The stop is asked one second before Bob's next cycle is due.
            await trio.sleep_until(bob_due - 1.0)

            stopping = trio.current_time()
            await rig.users.shutdown()

            assert trio.current_time() == stopping
            assert stopped_at == {child_name(bob): stopping}
            await trio.sleep(2 * INTERVAL)
            assert [c.result for c in rig.cycles_of(bob)] == ["ok"]


async def test_an_idle_account_stops_at_once_while_another_cycle_is_in_flight(
    clock: MockClock, world: World, database_url: str, tmp_path: Path
) -> None:
    with users_stopped_at() as stopped_at:
        async with pipeline_rig(
            world,
            database_url,
            tmp_path,
            settings=PollSettings(interval_s=INTERVAL),
            shutdown_grace_s=GRACE,
        ) as rig:
            # No jitter: a first poll comes half an interval after the start, then one
            # every interval, so the moments below are exact.
            rig.poller.rng = Midpoint()
            # Bob is polled first and is idle between cycles; Ann's cycle is held at Google.
            bob = await rig.connect("bob@example.com")
            ann = await rig.connect("ann@example.com")
            bob_polled = trio.Event()
            rig.poller.cycle_hooks.append(
                lambda account, *_: bob_polled.set() if account == bob else None
            )
            await start_polling(rig, bob)
            with trio.fail_after(INTERVAL):
                await bob_polled.wait()
            assert [c.result for c in rig.cycles_of(bob)] == ["ok"]
            bob_due = rig.poller.statuses[bob.connection_id].next_due
            assert bob_due is not None
            # Ann's first poll (held) comes 10 s before Bob's next one; the stop is asked
            # 1 s before Bob's: Ann's request is 9 s in flight (the client gives up at 20 s).
            await trio.sleep_until(bob_due - 10.0 - INTERVAL / 2)
            await hold_first_sync(rig, ann)
            assert bob_due - 10.0 <= trio.current_time() < bob_due - 9.0
            await trio.sleep_until(bob_due - 1.0)
            bob_cycles = len(rig.cycles_of(bob))

            stopping = trio.current_time()
            await rig.users.shutdown()

            assert round(trio.current_time() - stopping, 9) == GRACE
            assert [c.result for c in rig.cycles_of(ann)] == ["cancelled"]
            assert await stored_for(rig, ann) == (0, 0)
            # Bob: no new cycle after the stop request, and his task ended at once.
            assert len(rig.cycles_of(bob)) == bob_cycles
            assert [c for c in rig.cycles_of(bob) if c.started >= stopping] == []
            assert stopped_at[child_name(bob)] == stopping
