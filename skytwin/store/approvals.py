"""Approval requests and the execution outbox.

At most one execution per approval is a database property, not a hope:

* ``respond`` claims a request with ONE conditional update (pending, the
  caller's, not expired). Concurrent callers serialise on the row lock; the
  losers find it no longer pending. Approving inserts the execution row in the
  same transaction (the outbox); ``executions.approval_id`` is unique.
* ``claim_execution`` takes one pending execution with ``FOR UPDATE SKIP
  LOCKED`` and records the attempt (``attempted_at``, ``attempts``) and
  commits *before* the action is carried out, so a crash between claim and
  result is visible at the next start and never blindly repeated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .pool import Connection


@dataclass(frozen=True, slots=True)
class RespondOutcome:
    """What answering an approval request did."""

    result: str  # "approved" | "rejected" | "not_found" | "already_answered" | "expired"
    approval_id: int
    status: str | None = None
    responded_at: datetime | None = None
    execution_id: int | None = None


_ITEM_COLUMNS = """
    a.id, a.status, a.urgency, a.expires_at, a.created_at, a.responded_at,
    a.response_reason, d.action, d.params, d.reason, d.risk,
    s.id as signal_id, s.source as signal_source, s.type as signal_type,
    s.external_id as signal_external_id, s.occurred_at as signal_occurred_at,
    s.data as signal_data,
    e.id as execution_id, e.status as execution_status
"""
_ITEM_FROM = """
    from approval_requests a
    join decisions d on d.id = a.decision_id
    join signals s on s.id = d.signal_id
    left join executions e on e.approval_id = a.id
"""


def approval_json(row: dict[str, Any]) -> dict[str, Any]:
    """The API representation of an approval request row."""
    data = row["signal_data"] or {}
    summary = {
        k: data[k] for k in ("from", "subject", "title", "startTime", "organizer") if k in data
    }
    return {
        "id": row["id"],
        "status": row["status"],
        "action": row["action"],
        "params": row["params"],
        "reason": row["reason"],
        "risk": row["risk"],
        "urgency": row["urgency"],
        "expires_at": row["expires_at"].isoformat(),
        "created_at": row["created_at"].isoformat(),
        "responded_at": row["responded_at"].isoformat() if row["responded_at"] else None,
        "response_reason": row["response_reason"],
        "execution": (
            {"id": row["execution_id"], "status": row["execution_status"]}
            if row["execution_id"] is not None
            else None
        ),
        "signal": {
            "id": row["signal_id"],
            "source": row["signal_source"],
            "type": row["signal_type"],
            "external_id": row["signal_external_id"],
            "occurred_at": row["signal_occurred_at"].isoformat(),
            "summary": summary,
        },
    }


async def list_pending(
    conn: Connection, user_id: int, *, now: datetime, limit: int, before_id: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """Pending, unexpired requests of ``user_id``, newest first."""
    cur = await conn.execute(
        f"""
        select {_ITEM_COLUMNS} {_ITEM_FROM}
        where a.user_id = %(user)s and a.status = 'pending' and a.expires_at > %(now)s
          and (%(before)s::bigint is null or a.id < %(before)s)
        order by a.id desc limit %(limit)s
        """,
        {"user": user_id, "now": now, "before": before_id, "limit": limit + 1},
    )
    return _page(await cur.fetchall(), limit)


async def list_history(
    conn: Connection, user_id: int, *, now: datetime, limit: int, before_id: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """Answered or expired requests of ``user_id``, newest first."""
    cur = await conn.execute(
        f"""
        select {_ITEM_COLUMNS} {_ITEM_FROM}
        where a.user_id = %(user)s
          and (a.status <> 'pending' or a.expires_at <= %(now)s)
          and (%(before)s::bigint is null or a.id < %(before)s)
        order by a.id desc limit %(limit)s
        """,
        {"user": user_id, "now": now, "before": before_id, "limit": limit + 1},
    )
    return _page(await cur.fetchall(), limit)


def _page(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], int | None]:
    items = [approval_json(r) for r in rows[:limit]]
    return items, (items[-1]["id"] if len(rows) > limit and items else None)


async def respond(
    conn: Connection,
    user_id: int,
    approval_id: int,
    *,
    approve: bool,
    reason: str | None,
    now: datetime,
) -> RespondOutcome:
    """Answer a request inside the caller's transaction; approving writes the execution."""
    cur = await conn.execute(
        """
        update approval_requests
        set status = %(status)s, responded_at = %(now)s, response_reason = %(reason)s
        where id = %(id)s and user_id = %(user)s and status = 'pending' and expires_at > %(now)s
        returning decision_id
        """,
        {
            "status": "approved" if approve else "rejected",
            "now": now,
            "reason": reason,
            "id": approval_id,
            "user": user_id,
        },
    )
    claimed = await cur.fetchone()
    if claimed is None:
        return await _why_not(conn, user_id, approval_id, now)
    if not approve:
        return RespondOutcome("rejected", approval_id, "rejected", now)
    # not_before on the caller's clock, the one claim_execution compares it with
    # (the column's default is the database server's clock).
    cur = await conn.execute(
        """
        insert into executions (approval_id, decision_id, user_id, action, params, not_before)
        select %(approval)s, d.id, d.user_id, d.action, d.params, %(now)s
        from decisions d where d.id = %(decision)s
        returning id
        """,
        {"approval": approval_id, "decision": claimed["decision_id"], "now": now},
    )
    row = await cur.fetchone()
    assert row is not None
    return RespondOutcome("approved", approval_id, "approved", now, row["id"])


async def _why_not(
    conn: Connection, user_id: int, approval_id: int, now: datetime
) -> RespondOutcome:
    cur = await conn.execute(
        """
        select a.status, a.expires_at, a.responded_at, e.id as execution_id
        from approval_requests a left join executions e on e.approval_id = a.id
        where a.id = %s and a.user_id = %s
        """,
        (approval_id, user_id),
    )
    row = await cur.fetchone()
    if row is None:
        # Someone else's request looks exactly like a missing one.
        return RespondOutcome("not_found", approval_id)
    if row["status"] in ("approved", "rejected"):
        return RespondOutcome(
            "already_answered", approval_id, row["status"], row["responded_at"], row["execution_id"]
        )
    return RespondOutcome("expired", approval_id, "expired", row["responded_at"])


async def expire_pending(conn: Connection, *, now: datetime) -> int:
    """Mark every pending request past its expiry as expired; return how many."""
    cur = await conn.execute(
        """
        update approval_requests set status = 'expired'
        where status = 'pending' and expires_at <= %s
        """,
        (now,),
    )
    return cur.rowcount


# ---- executions ----


@dataclass(frozen=True, slots=True)
class Execution:
    """One action to carry out (or carried out)."""

    id: int
    approval_id: int | None
    user_id: int
    action: str
    params: dict[str, Any]
    status: str
    attempts: int
    result: Any
    error: str | None


FINISHED = frozenset({"succeeded", "failed"})
_EXEC_COLUMNS = "id, approval_id, user_id, action, params, status, attempts, result, error"


async def claim_execution(conn: Connection, *, now: datetime) -> Execution | None:
    """Take the oldest pending execution and record the attempt (commit before acting)."""
    cur = await conn.execute(
        f"""
        update executions set status = 'running', attempts = attempts + 1,
                              attempted_at = %(now)s, updated_at = %(now)s
        where id = (
            select id from executions where status = 'pending' and not_before <= %(now)s
            order by id for update skip locked limit 1
        )
        returning {_EXEC_COLUMNS}
        """,
        {"now": now},
    )
    row = await cur.fetchone()
    return Execution(**row) if row else None


async def interrupted_executions(conn: Connection) -> list[Execution]:
    """Executions claimed by a process that died before recording their result."""
    cur = await conn.execute(
        f"select {_EXEC_COLUMNS} from executions where status = 'running' order by id"
    )
    return [Execution(**row) for row in await cur.fetchall()]


async def finish_execution(
    conn: Connection,
    execution_id: int,
    *,
    succeeded: bool,
    result: Any = None,
    error: str | None = None,
    now: datetime,
) -> None:
    """Record the outcome of a claimed execution (status and result together)."""
    from psycopg.types.json import Jsonb

    await conn.execute(
        """
        update executions set status = %(status)s, result = %(result)s, error = %(error)s,
                              updated_at = %(now)s
        where id = %(id)s and status = 'running'
        """,
        {
            "status": "succeeded" if succeeded else "failed",
            "result": Jsonb(result) if result is not None else None,
            "error": error,
            "now": now,
            "id": execution_id,
        },
    )


async def get_execution(conn: Connection, user_id: int, execution_id: int) -> Execution | None:
    """The caller's execution, or None (also for someone else's)."""
    cur = await conn.execute(
        f"select {_EXEC_COLUMNS} from executions where id = %s and user_id = %s",
        (execution_id, user_id),
    )
    row = await cur.fetchone()
    return Execution(**row) if row else None


async def defer_execution(
    conn: Connection, execution_id: int, *, error: str, delay_s: float, now: datetime
) -> None:
    """Hand a claimed execution back to the queue, not to be claimed for ``delay_s``."""
    from datetime import timedelta

    await conn.execute(
        """
        update executions set status = 'pending', error = %(error)s, updated_at = %(now)s,
                              not_before = %(not_before)s
        where id = %(id)s and status = 'running'
        """,
        {
            "error": error,
            "now": now,
            "not_before": now + timedelta(seconds=delay_s),
            "id": execution_id,
        },
    )
