"""Ingesting signals: duplicates are no-ops, decisions follow, one bad signal is isolated."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from skytwin.store import Pool, transaction, users
from skytwin.store.signals import ingest_signals, list_signals, retry_unprocessed

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sig:
    source: str
    type: str
    external_id: str
    occurred_at: datetime = NOW
    data: dict[str, Any] = field(default_factory=dict)


def newsletter(n: int) -> Sig:
    return Sig("gmail", "newsletter", f"m{n}", NOW, {"messageId": f"m{n}", "from": "news@x.io"})


async def make_user(pool: Pool, email: str = "ann@example.com") -> int:
    async with pool.connection() as conn:
        return (await users.create_user(conn, email, "Ann")).id


async def test_duplicates_are_no_ops_and_decisions_are_made_once(pool: Pool) -> None:
    user_id = await make_user(pool)
    batch = [newsletter(1), newsletter(2), Sig("gmail", "work_email", "m3")]

    first = await transaction(pool, lambda conn: ingest_signals(conn, user_id, batch, now=NOW))
    again = await transaction(pool, lambda conn: ingest_signals(conn, user_id, batch, now=NOW))

    assert len(first.new_signal_ids) == 3 and first.duplicates == 0
    assert (first.decisions, first.approvals, first.executions) == (2, 2, 0)
    assert again.new_signal_ids == [] and again.duplicates == 3 and again.decisions == 0
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select a.urgency, a.expires_at, d.action, d.params from approval_requests a "
            "join decisions d on d.id = a.decision_id order by a.id"
        )
        rows = await cur.fetchall()
    assert [r["params"] for r in rows] == [{"messageId": "m1"}, {"messageId": "m2"}]
    assert {r["action"] for r in rows} == {"gmail.archive"}
    assert {r["expires_at"] for r in rows} == {NOW + timedelta(hours=72)}


async def test_auto_approved_low_risk_actions_become_executions(pool: Pool) -> None:
    user_id = await make_user(pool)
    async with pool.connection() as conn:
        await conn.execute(
            "update users set settings = '{\"auto_approve_low_risk\": true}' where id = %s",
            (user_id,),
        )
    result = await transaction(
        pool, lambda conn: ingest_signals(conn, user_id, [newsletter(1)], now=NOW)
    )
    assert (result.approvals, result.executions) == (0, 1)


async def test_one_failing_signal_is_recorded_and_the_rest_proceed(pool: Pool, monkeypatch) -> None:
    user_id = await make_user(pool)
    import skytwin.store.signals as store_signals
    from skytwin.pipeline import rules

    def faulty(source: str, signal_type: str, data: Any, *, now: datetime) -> Any:
        # For m2 only, a proposal the database refuses (risk outside its check).
        if data.get("messageId") == "m2":
            return rules.Proposal("gmail.archive", {}, "catastrophic", True, "low", "bad")
        return rules.propose(source, signal_type, data, now=now)

    with monkeypatch.context() as patch:
        patch.setattr(store_signals, "propose", faulty)
        result = await transaction(
            pool,
            lambda conn: ingest_signals(
                conn, user_id, [newsletter(1), newsletter(2), newsletter(3)], now=NOW
            ),
        )
    assert len(result.new_signal_ids) == 3
    assert result.approvals == 2
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select external_id, processed_at is not null as done, process_attempts, process_error "
            "from signals order by id"
        )
        rows = await cur.fetchall()
    assert [(r["external_id"], r["done"], r["process_attempts"]) for r in rows] == [
        ("m1", True, 0),
        ("m2", False, 1),
        ("m3", True, 0),
    ]
    assert "CheckViolation" in rows[1]["process_error"]

    retried = await transaction(pool, lambda conn: retry_unprocessed(conn, now=NOW))
    assert retried == 1
    async with pool.connection() as conn:
        cur = await conn.execute("select count(*) as n from approval_requests")
        assert (await cur.fetchone())["n"] == 3


async def test_list_signals_newest_first_with_cursor(pool: Pool) -> None:
    user_id = await make_user(pool)
    other = await make_user(pool, "bob@example.com")
    await transaction(
        pool, lambda conn: ingest_signals(conn, user_id, [newsletter(i) for i in range(5)], now=NOW)
    )
    await transaction(pool, lambda conn: ingest_signals(conn, other, [newsletter(9)], now=NOW))
    async with pool.connection() as conn:
        page1, cursor = await list_signals(conn, user_id, limit=2)
        page2, cursor2 = await list_signals(conn, user_id, limit=2, before_id=cursor)
        page3, cursor3 = await list_signals(conn, user_id, limit=2, before_id=cursor2)
    assert [s.external_id for s in page1 + page2 + page3] == ["m4", "m3", "m2", "m1", "m0"]
    assert cursor3 is None
