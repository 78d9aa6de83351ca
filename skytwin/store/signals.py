"""Signals, and the decisions and approval requests derived from them.

``ingest_signals`` is the heart of exactly-once ingestion: called inside the
caller's transaction, it inserts the signals (duplicates are no-ops thanks to
the unique (user, source, external id)), derives a decision and, where needed,
an approval request or an execution for each *new* signal. The caller saves its
connector cursor in the same transaction, so a crash anywhere before the
commit leaves both where they were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from psycopg.types.json import Jsonb

from ..pipeline.rules import propose
from .pool import Connection


class SignalLike(Protocol):
    """What the store needs of a signal (connectors' ``Signal`` fits)."""

    @property
    def source(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def external_id(self) -> str: ...
    @property
    def occurred_at(self) -> datetime: ...
    @property
    def data(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class StoredSignal:
    """A signal as the API shows it."""

    id: int
    source: str
    type: str
    external_id: str
    occurred_at: datetime
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The API representation."""
        return {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "external_id": self.external_id,
            "occurred_at": self.occurred_at.isoformat(),
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one ingest did: which signals were new and what was decided."""

    new_signal_ids: list[int]
    new_keys: list[tuple[str, str]]  # (source, external id) of the new signals
    duplicates: int
    decisions: int
    approvals: int
    executions: int


async def insert_signals(
    conn: Connection,
    user_id: int,
    signals: Sequence[SignalLike],
    *,
    connection_id: int | None = None,
) -> list[tuple[int, SignalLike]]:
    """Insert ``signals`` for ``user_id``; return (id, signal) for the ones that were new.

    ``connection_id`` names the connected account they came from (None for the
    ingest API), so an approved action later acts on the right mailbox.
    """
    if not signals:
        return []
    cur = await conn.execute(
        """
        insert into signals
            (user_id, connection_id, source, type, external_id, occurred_at, data)
        select %(user_id)s, %(connection_id)s, s.source, s.type, s.external_id,
               s.occurred_at, s.data
        from unnest(%(sources)s::text[], %(types)s::text[], %(ids)s::text[],
                    %(times)s::timestamptz[], %(datas)s::jsonb[])
             as s(source, type, external_id, occurred_at, data)
        on conflict (user_id, source, external_id) do nothing
        returning id, source, external_id
        """,
        {
            "user_id": user_id,
            "connection_id": connection_id,
            "sources": [s.source for s in signals],
            "types": [s.type for s in signals],
            "ids": [s.external_id for s in signals],
            "times": [s.occurred_at for s in signals],
            "datas": [Jsonb(dict(s.data)) for s in signals],
        },
    )
    by_key = {(s.source, s.external_id): s for s in signals}
    return [
        (row["id"], by_key[(row["source"], row["external_id"])]) for row in await cur.fetchall()
    ]


async def user_settings(conn: Connection, user_id: int) -> dict[str, Any]:
    """The user's settings document."""
    cur = await conn.execute("select settings from users where id = %s", (user_id,))
    row = await cur.fetchone()
    return dict(row["settings"]) if row else {}


async def ingest_signals(
    conn: Connection,
    user_id: int,
    signals: Sequence[SignalLike],
    *,
    now: datetime | None = None,
    connection_id: int | None = None,
) -> IngestResult:
    """Insert signals and decide on the new ones; run inside the caller's transaction."""
    now = now or datetime.now(UTC)
    new = await insert_signals(conn, user_id, signals, connection_id=connection_id)
    counts = {"decisions": 0, "approvals": 0, "executions": 0}
    if new:
        settings = await user_settings(conn, user_id)
        for signal_id, signal in new:
            outcome = await decide_one(conn, user_id, signal_id, signal, settings, now)
            if outcome in ("approvals", "executions"):
                counts[outcome] += 1
                counts["decisions"] += 1
    return IngestResult(
        new_signal_ids=[signal_id for signal_id, _ in new],
        new_keys=[(signal.source, signal.external_id) for _, signal in new],
        duplicates=len(signals) - len(new),
        decisions=counts["decisions"],
        approvals=counts["approvals"],
        executions=counts["executions"],
    )


async def decide_one(
    conn: Connection,
    user_id: int,
    signal_id: int,
    signal: SignalLike,
    settings: Mapping[str, Any],
    now: datetime,
) -> str:
    """Decide on one stored signal inside a savepoint; a failure is recorded, not raised.

    Returns "approvals", "executions", "none" or "failed". A failed signal keeps
    ``processed_at`` null with its error, and ``retry_unprocessed`` tries again
    later; it never blocks the signals around it.
    """
    try:
        async with conn.transaction():
            outcome = await _decide(conn, user_id, signal_id, signal, settings, now)
            await conn.execute(
                "update signals set processed_at = %s, process_error = null where id = %s",
                (now, signal_id),
            )
            return outcome
    except Exception as exc:  # noqa: BLE001 - one bad signal must not sink the batch
        await conn.execute(
            """
            update signals set process_attempts = process_attempts + 1,
                               process_error = %s
            where id = %s
            """,
            (f"{type(exc).__name__}: {exc}"[:500], signal_id),
        )
        return "failed"


async def _decide(
    conn: Connection,
    user_id: int,
    signal_id: int,
    signal: SignalLike,
    settings: Mapping[str, Any],
    now: datetime,
) -> str:
    proposal = propose(signal.source, signal.type, signal.data, now=now)
    if proposal is None:
        return "none"
    needs_approval = proposal.requires_approval(settings)
    cur = await conn.execute(
        """
        insert into decisions
            (signal_id, user_id, action, params, risk, requires_approval, reason)
        values (%(signal_id)s, %(user_id)s, %(action)s, %(params)s, %(risk)s,
                %(requires_approval)s, %(reason)s)
        on conflict (signal_id) do nothing
        returning id
        """,
        {
            "signal_id": signal_id,
            "user_id": user_id,
            "action": proposal.action,
            "params": Jsonb(proposal.params),
            "risk": proposal.risk,
            "requires_approval": needs_approval,
            "reason": proposal.reason,
        },
    )
    row = await cur.fetchone()
    if row is None:
        return "none"  # decided already (a retry after a partial failure)
    if needs_approval:
        await conn.execute(
            """
            insert into approval_requests (decision_id, user_id, urgency, expires_at)
            values (%s, %s, %s, %s)
            """,
            (row["id"], user_id, proposal.urgency, proposal.expires_at(now)),
        )
        return "approvals"
    await conn.execute(
        "insert into executions (decision_id, user_id, action, params, not_before) "
        "values (%s, %s, %s, %s, %s)",
        (row["id"], user_id, proposal.action, Jsonb(proposal.params), now),
    )
    return "executions"


@dataclass(frozen=True, slots=True)
class _Row:
    source: str
    type: str
    external_id: str
    occurred_at: datetime
    data: dict[str, Any]


async def retry_unprocessed(
    conn: Connection, *, max_attempts: int = 10, limit: int = 100, now: datetime | None = None
) -> int:
    """Decide again on signals whose decision failed earlier; return how many succeeded."""
    now = now or datetime.now(UTC)
    cur = await conn.execute(
        """
        select id, user_id, source, type, external_id, occurred_at, data
        from signals
        where processed_at is null and process_attempts between 1 and %(max)s
        order by id
        limit %(limit)s
        for update skip locked
        """,
        {"max": max_attempts - 1, "limit": limit},
    )
    done = 0
    for row in await cur.fetchall():
        settings = await user_settings(conn, row["user_id"])
        signal = _Row(
            row["source"], row["type"], row["external_id"], row["occurred_at"], row["data"]
        )
        outcome = await decide_one(conn, row["user_id"], row["id"], signal, settings, now)
        done += outcome != "failed"
    return done


async def list_signals(
    conn: Connection, user_id: int, *, limit: int, before_id: int | None = None
) -> tuple[list[StoredSignal], int | None]:
    """The user's signals newest first; returns (page, id to pass as ``before_id`` next)."""
    cur = await conn.execute(
        """
        select id, source, type, external_id, occurred_at, data
        from signals
        where user_id = %(user_id)s and (%(before)s::bigint is null or id < %(before)s)
        order by id desc
        limit %(limit)s
        """,
        {"user_id": user_id, "before": before_id, "limit": limit + 1},
    )
    rows = await cur.fetchall()
    page = [StoredSignal(**row) for row in rows[:limit]]
    next_before = page[-1].id if len(rows) > limit and page else None
    return page, next_before
