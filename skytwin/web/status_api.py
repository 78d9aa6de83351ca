"""``GET /api/status``: how the caller's connected accounts are doing.

One answer joins three sources, each read once:

* the database: the connection (active / needs re-authorization and why), each
  connector's last success and last error, and a few counts;
* the poller's in-memory ``AccountStatus``: breaker, last poll, next poll;
* the "users" supervisor's snapshot: the account's poll task state and restarts.

The account's own ``last_success_at`` / ``last_error`` merge memory and database,
so they survive a restart and the end of a poll task; ``polling`` is this
process's view only (None when no poll task ever ran here).

Trio times (breaker probes, next poll, supervisor ``since``) become wall-clock
ISO timestamps here. Tokens never appear: no column that holds one is read.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
from quart import Blueprint, Response, jsonify

from ..pipeline.housekeeping import child_name
from ..store.connections import Account, CursorState, cursor_states
from ..store.pool import Connection
from .auth import authenticated, current_principal
from .state import WebState, current_state

blueprint = Blueprint("status", __name__)

# Where the dashboard sends a user whose Google grant was revoked or expired.
RECONNECT_URL = "/oauth/google/start"
USERS_SUPERVISOR = "users"
MAX_ERROR_CHARS = 500


# ---- time ----


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def wall_clock(trio_time: float | None) -> str | None:
    """A trio time (past or future) as a wall-clock ISO timestamp, or None."""
    if trio_time is None or not math.isfinite(trio_time):
        return None
    offset = trio_time - trio.current_time()
    return _iso(datetime.now(UTC) + timedelta(seconds=offset))


def _error(message: str | None) -> str | None:
    # Errors are typed summaries (describe_error), but a crashed task's message is
    # free text: keep the answer bounded whatever it says.
    return message[:MAX_ERROR_CHARS] if message else None


# ---- the database side ----


async def _connections(conn: Connection, user_id: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        """
        select id as connection_id, account_email, status, status_reason
        from oauth_connections where user_id = %s order by id
        """,
        (user_id,),
    )
    return list(await cur.fetchall())


async def _counts(conn: Connection, user_id: int, now: datetime) -> dict[str, int]:
    cur = await conn.execute(
        """
        select
          (select count(*) from approval_requests
            where user_id = %(user)s and status = 'pending' and expires_at > %(now)s)
            as pending_approvals,
          (select count(*) from signals where user_id = %(user)s) as signals,
          (select count(*) from executions
            where user_id = %(user)s and status in ('pending', 'running')) as executions_in_flight,
          (select count(*) from executions
            where user_id = %(user)s and status = 'failed') as executions_failed
        """,
        {"user": user_id, "now": now},
    )
    row = await cur.fetchone()
    assert row is not None
    return {name: int(value) for name, value in row.items()}


# ---- the in-memory side ----


def _supervisor_children(state: WebState) -> dict[str, Any]:
    for supervisor in state.supervisors:
        if supervisor.name == USERS_SUPERVISOR:
            return {child.name: child for child in supervisor.snapshot().children}
    return {}


def _supervisor_json(child: Any) -> dict[str, Any] | None:
    if child is None:
        return None
    return {
        "state": str(child.state),
        "restarts": child.restarts,
        "last_error": _error(child.last_error),
        "since": wall_clock(child.since),
    }


def _polling_json(status: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(breaker, polling) of one account's ``AccountStatus``, or (None, None)."""
    if status is None:
        return None, None
    snapshot = status.breaker.snapshot()
    breaker = {
        "state": str(snapshot.state),
        "consecutive_failures": snapshot.consecutive_failures,
        "open_count": snapshot.open_count,
        "next_probe_at": wall_clock(snapshot.next_probe_at),
        "last_error": _error(snapshot.last_error),
    }
    polling = {
        "last_success_at": _iso(status.last_success_at),
        "last_error": _error(status.last_error),
        "last_error_at": _iso(status.last_error_at),
        "next_poll_at": wall_clock(status.next_due),
        "last_cycle_s": round(status.last_cycle_s, 3) if status.last_cycle_s is not None else None,
        "cycles_ok": status.cycles_ok,
        "cycles_failed": status.cycles_failed,
        "signals_new": status.signals_new,
    }
    return breaker, polling


def _connector_json(cursor: CursorState, status: Any) -> dict[str, Any]:
    # The database's last success lags by up to the poller's cursor_save_every_s.
    in_memory = status.connector_success_at.get(cursor.connector) if status else None
    return {
        "connector": cursor.connector,
        "synced": cursor.cursor is not None,  # the cursor itself stays private
        "last_success_at": _iso(_latest(cursor.last_success_at, in_memory)),
        "last_error": _error(cursor.last_error),
        "last_error_at": _iso(cursor.last_error_at),
    }


def _latest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def _last_outcomes(
    cursors: list[CursorState], status: Any
) -> tuple[datetime | None, str | None, datetime | None]:
    """(last success, last error, its time): this process's memory and the stored cursors.

    The database remembers across restarts and after a poll task ended; memory also
    knows failures no connector recorded (a cycle timeout, the database away).
    """
    success = _latest(status.last_success_at if status else None,
                      *(c.last_success_at for c in cursors))
    errors = [(c.last_error_at, c.last_error) for c in cursors if c.last_error and c.last_error_at]
    if status is not None and status.last_error and status.last_error_at:
        errors.append((status.last_error_at, status.last_error))
    if not errors:
        return success, None, None
    error_at, error = max(errors, key=lambda pair: pair[0])
    return success, error, error_at


def account_json(
    row: dict[str, Any], cursors: list[CursorState], status: Any, child: Any
) -> dict[str, Any]:
    """One account's entry in ``/api/status``."""
    breaker, polling = _polling_json(status)
    needs_reauth = row["status"] == "needs_reauth" or bool(status and status.needs_reauth)
    last_success_at, last_error, last_error_at = _last_outcomes(cursors, status)
    return {
        "connection_id": row["connection_id"],
        "account_email": row["account_email"],
        "status": "needs_reauth" if needs_reauth else row["status"],
        "status_reason": _error(row["status_reason"]),
        "needs_reauth": needs_reauth,
        "reconnect_url": RECONNECT_URL if needs_reauth else None,
        "last_success_at": _iso(last_success_at),
        "last_error": _error(last_error),
        "last_error_at": _iso(last_error_at),
        "supervisor": _supervisor_json(child),
        "breaker": breaker,
        "polling": polling,
        "connectors": [_connector_json(c, status) for c in cursors],
    }


# ---- the endpoint ----


@blueprint.get("/api/status")
@authenticated
async def status() -> Response:
    """The caller's accounts: connection, poll task, breaker, connectors; and counts."""
    state = current_state()
    principal = current_principal()
    user_id = principal.user_id
    now = datetime.now(UTC)
    async with state.pool.connection() as conn:
        rows = await _connections(conn, user_id)
        cursors = {r["connection_id"]: await cursor_states(conn, r["connection_id"]) for r in rows}
        counts = await _counts(conn, user_id, now)
    children = _supervisor_children(state)
    statuses: dict[int, Any] = state.poller.statuses if state.poller is not None else {}
    accounts = []
    for row in rows:
        account = Account(row["connection_id"], user_id, row["account_email"], row["status"])
        name = child_name(account)
        accounts.append(
            account_json(
                row, cursors[row["connection_id"]], statuses.get(row["connection_id"]),
                children.get(name),
            )
        )
    return jsonify(
        {
            "generated_at": _iso(now),
            "user": {"email": principal.email},
            "counts": counts,
            "accounts": accounts,
        }
    )
