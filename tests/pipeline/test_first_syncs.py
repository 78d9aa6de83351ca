"""A crowd of never-synced accounts queues for first syncs instead of timing out."""

from __future__ import annotations

from functools import partial

import trio
from trio.testing import MockClock

from skytwin.fakegoogle import World
from skytwin.nursery import Restart
from skytwin.pipeline.google import GoogleLimits
from skytwin.pipeline.poller import PollSettings

from .harness import expected_ids, pipeline_rig, until

ACCOUNTS = 12
MESSAGES = 3


async def test_first_syncs_wait_their_turn_before_their_deadline_starts(
    clock: MockClock, world: World, database_url, tmp_path
) -> None:
    # Each first sync makes 1 + MESSAGES Gmail calls at 1 request/s per API: twelve at
    # once would queue ~48 s behind the rate limit, far past the 30 s cycle deadline.
    settings = PollSettings(
        interval_s=60.0, cycle_deadline_s=30.0, first_sync_concurrency=2, jitter_fraction=0.0
    )
    limits = GoogleLimits(rate_per_s=1.0)
    async with pipeline_rig(
        world, database_url, tmp_path, settings=settings, limits=limits
    ) as rig:
        accounts = [await rig.connect(f"user{i}@example.com") for i in range(ACCOUNTS)]
        for account in accounts:
            for m in range(MESSAGES):
                world.add_message(account.account_email, sender="a@x.example", subject=f"#{m}")
        waiting_peak = 0

        def watch_queue() -> None:
            nonlocal waiting_peak
            waiting = rig.poller.first_syncs.statistics().tasks_waiting
            waiting_peak = max(waiting_peak, waiting)

        # Every first poll due at once (no spread): the worst crowd.
        rig.poller.rng.uniform = lambda a, b: 0.0  # type: ignore[method-assign]
        for account in accounts:
            await rig.users.start_child(
                f"account:{account.connection_id}",
                partial(rig.poller.poll_account, account),
                restart=Restart.TRANSIENT,
            )

        async def sample() -> None:
            while True:
                watch_queue()
                await trio.sleep(0.5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            await until(
                lambda: all(rig.cycles_of(a, "ok") for a in accounts), within=ACCOUNTS * 10
            )
            nursery.cancel_scope.cancel()

        assert waiting_peak >= ACCOUNTS - 2  # they really queued for the two slots
        # No cycle timed out, and no first sync was thrown away and made again.
        assert {c.result for c in rig.cycles} == {"ok"}
        assert len(world.requests("gmail.users.messages.list")) == ACCOUNTS
        assert len(world.requests("calendar.events.list")) == ACCOUNTS
        for account in accounts:
            stored = await rig.stored_ids(account)
            assert stored["gmail"] == expected_ids(world, account.account_email)["gmail"]
