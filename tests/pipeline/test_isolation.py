"""Two users, one whose Google fails every call (virtual time, real HTTP, real PostgreSQL)."""

from __future__ import annotations

from functools import partial

import trio
from trio.testing import MockClock

from skytwin.fakegoogle import World
from skytwin.nursery import BreakerState, Restart
from tests.fakegoogle.harness import EPOCH, virtual_now

from .harness import event_ids, expected_ids, pipeline_rig

INTERVAL = 60.0
RECOVERS_AT = 1500.0
END = 2700.0


async def test_failing_google_opens_one_breaker_and_the_other_user_never_waits(
    clock: MockClock, world: World, database_url, tmp_path
) -> None:
    async with pipeline_rig(world, database_url, tmp_path) as rig:
        ann = await rig.connect("ann@example.com")
        bob = await rig.connect("bob@example.com")
        for email in (ann.account_email, bob.account_email):
            world.add_message(email, sender="news@shop.example", subject="Weekly newsletter")
            world.add_message(email, sender="boss@work.example", subject="Quarterly plan")
            world.add_event(
                email,
                summary="Design review",
                organizer="lead@work.example",
                start=EPOCH.replace(hour=15),
                end=EPOCH.replace(hour=16),
            )
        for api in ("gmail", "calendar", "oauth"):
            world.faults(api, bob.account_email).down_until = RECOVERS_AT

        async def mail_arrives() -> None:
            for t in (300.0, 900.0, 1200.0, 2000.0):
                await trio.sleep_until(t)
                for email in (ann.account_email, bob.account_email):
                    world.add_message(email, sender="friend@x.example", subject=f"Note at {t:g}")

        for account in (ann, bob):
            await rig.users.start_child(
                f"account:{account.connection_id}",
                partial(rig.poller.poll_account, account),
                restart=Restart.TRANSIENT,
            )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mail_arrives)
            await trio.sleep_until(END)

        # The healthy user: every cycle ok, never more than one jittered interval apart.
        ann_cycles = rig.cycles_of(ann)
        assert ann_cycles and {c.result for c in ann_cycles} == {"ok"}
        assert ann_cycles[0].started < INTERVAL
        gaps = [b.started - a.started for a, b in zip(ann_cycles, ann_cycles[1:], strict=False)]
        assert all(0.9 * INTERVAL - 1e-6 <= gap <= 1.1 * INTERVAL + 1e-6 for gap in gaps), gaps
        assert END - ann_cycles[-1].started <= 1.1 * INTERVAL

        # The failing user: opened after 3 failed cycles, probes after 5, 10 and 20 minutes.
        bob_breaker = f"account:{bob.connection_id}"
        moves = [(t, e.new_state) for t, e in rig.transitions if e.name == bob_breaker]
        assert [state for _, state in moves] == [
            BreakerState.OPEN,
            BreakerState.HALF_OPEN,
            BreakerState.OPEN,
            BreakerState.HALF_OPEN,
            BreakerState.OPEN,
            BreakerState.HALF_OPEN,
            BreakerState.CLOSED,
        ]
        opened_at = moves[0][0]
        assert len([c for c in rig.cycles_of(bob) if c.started < opened_at]) == 3
        assert [round(moves[i + 1][0] - moves[i][0], 6) for i in (0, 2, 4)] == [
            300.0,
            600.0,
            1200.0,
        ]
        # Each probe is one cycle, started the moment the breaker half-opened.
        probes = [c for c in rig.cycles_of(bob) if c.started >= opened_at]
        assert [round(c.started, 6) for c in probes[:3]] == [
            round(moves[i][0], 6) for i in (1, 3, 5)
        ]
        assert [c.result for c in probes[:3]] == ["failed", "failed", "ok"]
        assert rig.poller.statuses[bob.connection_id].breaker.state is BreakerState.CLOSED
        assert not any(e.name == f"account:{ann.connection_id}" for _, e in rig.transitions)

        # Everything either mailbox or calendar holds arrived exactly once.
        for account in (ann, bob):
            stored = await rig.stored_ids(account)
            expected = expected_ids(world, account.account_email)
            assert sorted(stored["gmail"]) == expected["gmail"]
            assert len(stored["gmail"]) == len(set(stored["gmail"]))
            assert event_ids(stored["calendar"]) == expected["calendar"]
            assert len(stored["calendar"]) == len(set(stored["calendar"]))
        assert virtual_now() > EPOCH
