"""The fake's state machine, without HTTP: history, sync tokens, versions, fault plans."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
import trio
from trio.testing import MockClock

from skytwin.fakegoogle import Fault, FaultPlan, World
from tests.fakegoogle.harness import EMAIL, EPOCH, new_world, virtual_now


def frozen_now() -> datetime:
    """A wall clock that never moves (outside trio, where virtual_now cannot run)."""
    return EPOCH


def test_history_ids_increase_with_every_change() -> None:
    world = World(now=frozen_now)
    world.add_account(EMAIL)
    start = world.account(EMAIL).history_id
    first = world.add_message(EMAIL, sender="a@x.com", subject="one")
    world.modify_labels(EMAIL, first, remove=["UNREAD"])
    world.delete_message(EMAIL, first)
    kinds = [(r.id, r.kind) for r in world.account(EMAIL).history]
    assert kinds == [
        (start + 1, "messageAdded"),
        (start + 2, "labelRemoved"),
        (start + 3, "messageDeleted"),
    ]


def test_modify_without_change_records_no_history() -> None:
    world = World(now=frozen_now)
    world.add_account(EMAIL)
    message_id = world.add_message(EMAIL, sender="a@x.com", subject="one", labels=["INBOX"])
    before = world.account(EMAIL).history_id
    world.modify_labels(EMAIL, message_id, remove=["UNREAD"])  # it was never unread
    assert world.account(EMAIL).history_id == before


def test_history_retention_moves_the_floor() -> None:
    world = World(history_retention=2, now=frozen_now)
    world.add_account(EMAIL)
    for n in range(5):
        world.add_message(EMAIL, sender="a@x.com", subject=str(n))
    account = world.account(EMAIL)
    assert [r.id for r in account.history] == [account.history_id - 1, account.history_id]
    assert account.history_floor == account.history_id - 2


def test_event_versions_differ_even_when_the_clock_stands_still() -> None:
    # Two writes in the same millisecond must still be two versions (signal ids use them).
    frozen = World(now=frozen_now)
    frozen.add_account(EMAIL)
    start = EPOCH + timedelta(hours=1)
    event_id = frozen.add_event(EMAIL, summary="x", start=start, end=start + timedelta(hours=1))
    first = frozen.event(EMAIL, event_id)["updated"]
    frozen.update_event(EMAIL, event_id, summary="y")
    second = frozen.event(EMAIL, event_id)["updated"]
    assert second > first


def test_a_no_op_patch_makes_no_new_version() -> None:
    world = World(now=frozen_now)
    world.add_account(EMAIL)
    start = EPOCH
    event_id = world.add_event(EMAIL, summary="x", start=start, end=start + timedelta(hours=1))
    account = world.account(EMAIL)
    seq = account.calendar_seq
    world.patch_event(account, event_id, {"summary": "x"})
    assert account.calendar_seq == seq


def test_invited_events_carry_the_accounts_own_entry() -> None:
    world = World(now=frozen_now)
    world.add_account(EMAIL)
    start = EPOCH
    event_id = world.add_event(
        EMAIL,
        summary="Sync",
        start=start,
        end=start + timedelta(hours=1),
        organizer="boss@corp.com",
        attendees=["eve@corp.com"],
    )
    event = world.event(EMAIL, event_id)
    assert event["organizer"] == {"email": "boss@corp.com"}
    assert [a for a in event["attendees"] if a.get("self")] == [
        {"email": EMAIL, "self": True, "responseStatus": "needsAction"}
    ]


def test_scripted_faults_are_consumed_in_order_and_can_be_aimed() -> None:
    rng = random.Random(0)
    plan = FaultPlan().add(
        Fault.error(503, operation="gmail.users.messages.get", resource="m2"),
        Fault.error(500),
        Fault.dropped(),
    )
    assert plan.take("gmail.users.messages.get", "m1", 0.0, rng) == Fault.error(500)
    assert plan.take("gmail.users.messages.get", "m2", 0.0, rng) == Fault.error(
        503, operation="gmail.users.messages.get", resource="m2"
    )
    assert plan.take("gmail.users.getProfile", None, 0.0, rng) == Fault.dropped()
    assert plan.take("gmail.users.getProfile", None, 0.0, rng) is None


def test_down_until_answers_503_until_then() -> None:
    plan = FaultPlan(down_until=10.0, down_retry_after="3")
    rng = random.Random(0)
    assert plan.take("x", None, 9.999, rng) == Fault(status=503, retry_after="3")
    assert plan.take("x", None, 10.0, rng) is None


def test_error_rate_is_reproducible_from_the_seed() -> None:
    def draws(seed: int) -> list[int | None]:
        plan = FaultPlan(error_rate=0.5)
        rng = random.Random(seed)
        return [
            fault.status if (fault := plan.take("x", None, 0.0, rng)) else None for _ in range(50)
        ]

    assert draws(7) == draws(7)
    assert {s for s in draws(7) if s is not None} <= {429, 500, 503}
    assert 10 < sum(s is not None for s in draws(7)) < 40


async def test_plans_for_all_accounts_apply_before_an_accounts_own(clock: MockClock) -> None:
    world = new_world()
    world.add_account(EMAIL)
    world.faults("gmail").add(Fault.error(500))
    world.faults("gmail", EMAIL).add(Fault.error(503))
    assert world.take_fault("gmail", EMAIL, "op", None) == Fault.error(500)
    assert world.take_fault("gmail", EMAIL, "op", None) == Fault.error(503)
    assert world.take_fault("gmail", EMAIL, "op", None) is None
    with pytest.raises(ValueError, match="unknown api"):
        world.faults("drive")


async def test_access_tokens_expire_on_the_trio_clock(clock: MockClock) -> None:
    world = World(access_token_ttl_s=100.0, now=virtual_now)
    world.add_account(EMAIL)
    token = world.mint_access_token(EMAIL, frozenset())
    await trio.sleep(99.999)
    assert world.grant_for(token) is not None
    await trio.sleep(0.001)
    assert world.grant_for(token) is None
