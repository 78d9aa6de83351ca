"""Gmail sync and actions against the fake over HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio
from trio.testing import MockClock

from skytwin.connectors.errors import GoogleUnavailable, NotFound, PermanentApiError
from skytwin.connectors.gmail import (
    add_label,
    add_label_by_name,
    archive_message,
    ensure_label,
    mark_read,
    sync_gmail,
)
from skytwin.connectors.signals import SyncResult
from skytwin.fakegoogle import Fault, World
from tests.fakegoogle.harness import EMAIL, Rig, virtual_now

LIST = "gmail.users.messages.list"
GET = "gmail.users.messages.get"
HISTORY = "gmail.users.history.list"
PROFILE = "gmail.users.getProfile"


async def sync(rig: Rig, cursor: str | None, **kwargs: object) -> SyncResult:
    """One Gmail sync of the rig's account."""
    return await sync_gmail(rig.gmail(), rig.tokens(), cursor, now=virtual_now, **kwargs)  # type: ignore[arg-type]


def deliver(world: World, subject: str, **kwargs: object) -> str:
    """Deliver one message from a colleague."""
    return world.add_message(EMAIL, sender="Bob <bob@corp.com>", subject=subject, **kwargs)  # type: ignore[arg-type]


def ids(result: SyncResult) -> list[str]:
    """The external ids of a sync's signals, in order."""
    return [signal.external_id for signal in result.signals]


async def test_the_first_sync_is_a_full_sync_of_the_window(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    old = deliver(world, "old", received_at=virtual_now() - timedelta(days=10))
    first = deliver(world, "Q1 plan")
    await trio.sleep(60)
    second = world.add_message(EMAIL, sender="news@shop.com", subject="Weekly digest")
    world.add_message(EMAIL, sender="me", subject="draft", labels=["DRAFT"])
    world.add_message(EMAIL, sender=EMAIL, subject="sent", labels=["SENT"])
    to_self = world.add_message(EMAIL, sender=EMAIL, subject="note", labels=["SENT", "INBOX"])
    world.add_message(EMAIL, sender="x@spam.com", subject="win", labels=["SPAM"])

    result = await sync(rig, None)

    assert result.full_sync
    assert ids(result) == [first, second, to_self]
    assert old not in ids(result)
    assert [s.type for s in result.signals] == ["work_email", "newsletter", "work_email"]
    assert result.cursor == str(world.account(EMAIL).history_id)
    assert [r.query for r in world.requests(LIST)] == [
        {"q": ["newer_than:7d"], "maxResults": ["500"]}
    ]
    assert world.requests(GET)[0].query == {
        "format": ["metadata"],
        "metadataHeaders": ["From", "Subject", "Date"],
    }


async def test_an_incremental_sync_returns_only_new_mail(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    seen = deliver(world, "seen")
    first = await sync(rig, None)
    world.modify_labels(EMAIL, seen, remove=["UNREAD"])  # not a new message
    new = [deliver(world, "one"), deliver(world, "two")]
    before = len(world.log)

    second = await sync(rig, first.cursor)

    assert not second.full_sync
    assert ids(second) == new
    assert second.cursor == str(world.account(EMAIL).history_id)
    operations = [r.operation for r in list(world.log)[before:]]
    assert operations == [HISTORY, GET, GET]
    assert world.requests(HISTORY)[0].query == {
        "startHistoryId": [first.cursor],
        "historyTypes": ["messageAdded"],
        "maxResults": ["500"],
    }
    third = await sync(rig, second.cursor)
    assert (third.signals, third.cursor) == ((), second.cursor)


async def test_history_too_old_falls_back_to_a_full_sync(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    first = await sync(rig, None)
    messages = [deliver(world, "a"), deliver(world, "b")]
    world.expire_history(EMAIL)

    result = await sync(rig, first.cursor)

    assert result.full_sync
    assert [r.status for r in world.requests(HISTORY)] == [404]
    assert ids(result) == messages
    assert result.cursor == str(world.account(EMAIL).history_id)
    assert result == await sync(rig, None)  # the same as a first sync of this mailbox


async def test_every_page_is_followed(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    full_ids = [deliver(world, f"m{n}") for n in range(5)]
    first = await sync(rig, None, page_size=2)
    assert sorted(ids(first)) == sorted(full_ids)
    assert len(world.requests(LIST)) == 3
    later = [deliver(world, f"n{n}") for n in range(5)]
    second = await sync(rig, first.cursor, page_size=2)
    assert sorted(ids(second)) == sorted(later)
    assert len(world.requests(HISTORY)) == 3


async def test_a_message_deleted_between_list_and_get_is_skipped(
    rig: Rig, clock: MockClock
) -> None:
    world = rig.world
    keep, doomed = deliver(world, "keep"), deliver(world, "doomed")
    world.on_next(LIST, lambda w: w.delete_message(EMAIL, doomed))
    first = await sync(rig, None)
    assert ids(first) == [keep]
    assert {r.resource: r.status for r in world.requests(GET)} == {keep: 200, doomed: 404}

    late, doomed_late = deliver(world, "late"), deliver(world, "gone")
    world.on_next(HISTORY, lambda w: w.delete_message(EMAIL, doomed_late))
    second = await sync(rig, first.cursor)
    assert ids(second) == [late]


async def test_details_are_fetched_at_bounded_concurrency(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    for n in range(12):
        deliver(world, f"m{n}")
    # Each detail takes one second at Google: four at a time means three waves.
    world.faults("gmail", EMAIL).add(*(Fault.slow(1.0, operation=GET) for _ in range(12)))
    result = await sync(rig, None, concurrency=4)
    assert len(result.signals) == 12
    assert sorted(r.at for r in world.requests(GET)) == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    assert trio.current_time() == 3.0


async def test_one_failed_detail_fails_the_sync_plainly(rig: Rig, clock: MockClock) -> None:

    world = rig.world
    target = deliver(world, "unlucky")
    for n in range(5):
        deliver(world, f"m{n}")
    world.faults("gmail", EMAIL).add(
        *(Fault.error(500, operation=GET, resource=target) for _ in range(4))
    )
    with pytest.raises(GoogleUnavailable):  # not an ExceptionGroup: callers match on the type
        await sync(rig, None)


async def test_archive_mark_read_and_label_are_idempotent(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    message_id = deliver(world, "hello")
    label_id = world.add_label(EMAIL, "Projects")
    gmail, tokens = rig.gmail(), rig.tokens()
    assert await archive_message(gmail, tokens, message_id) == ["UNREAD"]
    history_id = world.account(EMAIL).history_id
    assert await archive_message(gmail, tokens, message_id) == ["UNREAD"]
    assert world.account(EMAIL).history_id == history_id  # the repeat changed nothing
    assert await mark_read(gmail, tokens, message_id) == []
    assert await add_label(gmail, tokens, message_id, label_id) == [label_id]
    assert world.calls[("gmail.users.messages.modify", message_id)] == 4
    bodies = [r.body for r in world.requests("gmail.users.messages.modify")]
    assert bodies[0] == b'{"addLabelIds":[],"removeLabelIds":["INBOX"]}'
    with pytest.raises(NotFound):
        await archive_message(gmail, tokens, "0000000000000bad")


async def test_labels_are_applied_by_name_and_created_once(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    first, second = deliver(world, "trip"), deliver(world, "another trip")
    gmail, tokens = rig.gmail(), rig.tokens()
    with pytest.raises(PermanentApiError) as caught:  # modify wants ids, as Gmail does
        await add_label(gmail, tokens, first, "SkyTwin/Travel")
    assert caught.value.status == 400
    labels = await add_label_by_name(gmail, tokens, first, "SkyTwin/Travel")
    (label_id,) = [label for label in labels if label not in ("INBOX", "UNREAD")]
    assert world.account(EMAIL).labels == {label_id: "SkyTwin/Travel"}
    assert label_id in await add_label_by_name(gmail, tokens, second, "skytwin/travel")
    assert len(world.requests("gmail.users.labels.create")) == 1


async def test_a_create_whose_answer_was_lost_finds_the_label(rig: Rig, clock: MockClock) -> None:
    world = rig.world
    # Gmail creates the label, then the connection dies: the retried create gets 409.
    world.faults("gmail", EMAIL).add(Fault.lost_answer(operation="gmail.users.labels.create"))
    label_id = await ensure_label(rig.gmail(), rig.tokens(), "SkyTwin/Orders")
    assert world.account(EMAIL).labels == {label_id: "SkyTwin/Orders"}
    statuses = [r.status for r in world.requests("gmail.users.labels.create")]
    assert statuses == [0, 409]
    assert [r.status for r in world.requests("gmail.users.labels.list")] == [200, 200]
