"""Accounts come and go while SkyTwin runs: discovery starts and removes poll tasks."""

from __future__ import annotations

from functools import partial

import trio
from trio.testing import MockClock

from skytwin.fakegoogle import Fault, World
from skytwin.pipeline.housekeeping import child_name, run_discovery, sync_accounts
from skytwin.pipeline.poller import PollSettings

from .harness import pipeline_rig, until

GRACE = 5.0


async def test_a_user_deleted_mid_cycle_ends_within_the_grace_and_keeps_its_cursor(
    clock: MockClock, world: World, database_url, tmp_path
) -> None:
    async with pipeline_rig(world, database_url, tmp_path, shutdown_grace_s=GRACE) as rig:
        ann = await rig.connect("ann@example.com")
        world.add_message(ann.account_email, sender="a@x.example", subject="hello")
        in_flight = trio.Event()
        world.on_next("gmail.users.getProfile", lambda w: in_flight.set())
        # The next call of the cycle hangs for 100 s: the cycle is in flight.
        world.faults("gmail", ann.account_email).add(
            Fault.slow(100.0, operation="gmail.users.messages.list")
        )
        await sync_accounts(rig.pool, rig.poller, rig.users)
        assert rig.users.child_names() == [child_name(ann)]
        await in_flight.wait()
        await trio.sleep(1.0)

        async with rig.pool.connection() as conn:
            await conn.execute("update users set deleted_at = now() where id = %s", (ann.user_id,))
        removing = trio.current_time()
        started, removed = await sync_accounts(rig.pool, rig.poller, rig.users)
        assert (started, removed) == (0, 1)
        assert trio.current_time() - removing <= GRACE
        assert rig.users.child_names() == []
        assert [c.result for c in rig.cycles_of(ann)] == ["cancelled"]
        async with rig.pool.connection() as conn:
            cur = await conn.execute("select count(*) as n from connector_cursors")
            assert (await cur.fetchone())["n"] == 0
            cur = await conn.execute("select count(*) as n from signals")
            assert (await cur.fetchone())["n"] == 0


async def test_new_and_disconnected_accounts_are_picked_up_within_one_interval(
    clock: MockClock, world: World, database_url, tmp_path
) -> None:
    interval = 60.0
    async with pipeline_rig(
        world, database_url, tmp_path, settings=PollSettings(interval_s=interval)
    ) as rig:
        ann = await rig.connect("ann@example.com")
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(run_discovery, rig.pool, rig.poller, rig.users, interval_s=interval)
            )
            assert rig.users.child_names() == [child_name(ann)]

            await trio.sleep(10.0)
            bob = await rig.connect("bob@example.com")
            connected_at = trio.current_time()
            await until(lambda: child_name(bob) in rig.users.child_names(), within=interval)

            async with rig.pool.connection() as conn:
                await conn.execute(
                    "update oauth_connections set status = 'disconnected' where id = %s",
                    (ann.connection_id,),
                )
            await until(lambda: child_name(ann) not in rig.users.child_names(), within=interval)
            assert rig.users.child_names() == [child_name(bob)]
            # Bob's first poll follows within another interval (spread start).
            await until(lambda: rig.cycles_of(bob), within=interval)
            assert rig.cycles_of(bob)[0].started - connected_at <= 2 * interval
            nursery.cancel_scope.cancel()
