"""``/api/signals`` and ``/api/events/ingest``: reading and producing signals."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from quart import Blueprint, Response, jsonify

from ..store import transaction
from ..store.pool import Connection
from ..store.signals import ingest_signals, list_signals
from .auth import authenticated, current_principal
from .state import current_state
from .validation import ValidationFailed, json_object, query_cursor, query_int, text, timestamp

blueprint = Blueprint("signals", __name__)

SOURCE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_DATA_BYTES = 64 * 1024
MAX_LIMIT = 500


@blueprint.get("/api/signals")
@authenticated
async def get_signals() -> Response:
    """The caller's signals, newest first, with cursor pagination."""
    limit = query_int("limit", default=50, minimum=1, maximum=MAX_LIMIT)
    before = query_cursor()
    principal = current_principal()
    async with current_state().pool.connection() as conn:
        page, next_before = await list_signals(
            conn, principal.user_id, limit=limit, before_id=before
        )
    return jsonify(
        {
            "signals": [s.to_json() for s in page],
            "next_cursor": str(next_before) if next_before is not None else None,
        }
    )


@dataclass(frozen=True, slots=True)
class IngestedSignal:
    """A signal posted by another producer."""

    source: str
    type: str
    external_id: str
    occurred_at: datetime
    data: dict[str, Any]


def parse_ingest(body: dict[str, Any]) -> IngestedSignal:
    """Validate an ingest body; a 400 names every bad field."""
    errors: dict[str, str] = {}
    source = text(body, "source", errors, max_len=64, pattern=SOURCE)
    signal_id = text(body, "id", errors, max_len=512)
    signal_type = text(body, "type", errors, max_len=64, pattern=TYPE)
    occurred_at = timestamp(body, "occurred_at", errors)
    data = body.get("data", {})
    if not isinstance(data, dict):
        errors["data"] = "must be a JSON object"
    elif len(json.dumps(data)) > MAX_DATA_BYTES:
        errors["data"] = f"must be at most {MAX_DATA_BYTES} bytes of JSON"
    unknown = sorted(set(body) - {"source", "id", "type", "occurred_at", "data"})
    for name in unknown:
        errors[name] = "is not a known field (the user comes from the token)"
    if errors:
        raise ValidationFailed(errors)
    assert source and signal_id and signal_type
    return IngestedSignal(
        source, signal_type, signal_id, occurred_at or datetime.now(UTC), data
    )


async def _outcome(conn: Connection, user_id: int, source: str, external_id: str) -> dict[str, Any]:
    """What SkyTwin did with a signal, read back from the database (same for retries)."""
    cur = await conn.execute(
        """
        select s.id as signal_id, d.id as decision_id, d.action, d.params, d.risk,
               d.requires_approval, a.id as approval_id, a.status as approval_status,
               a.expires_at, e.id as execution_id
        from signals s
        left join decisions d on d.signal_id = s.id
        left join approval_requests a on a.decision_id = d.id
        left join executions e on e.decision_id = d.id and e.approval_id is null
        where s.user_id = %s and s.source = %s and s.external_id = %s
        """,
        (user_id, source, external_id),
    )
    row = await cur.fetchone()
    assert row is not None
    decision = None
    if row["decision_id"] is not None:
        decision = {
            "id": row["decision_id"],
            "action": row["action"],
            "params": row["params"],
            "risk": row["risk"],
            "requires_approval": row["requires_approval"],
            "approval_id": row["approval_id"],
            "execution_id": row["execution_id"],
        }
    return {"signal_id": row["signal_id"], "decision": decision}


@blueprint.post("/api/events/ingest")
@authenticated
async def ingest() -> Response:
    """Store a signal from another producer; idempotent on (source, id)."""
    signal = parse_ingest(await json_object())
    user_id = current_principal().user_id

    async def store(conn: Connection) -> tuple[bool, dict[str, Any]]:
        result = await ingest_signals(conn, user_id, [signal])
        outcome = await _outcome(conn, user_id, signal.source, signal.external_id)
        return bool(result.new_signal_ids), outcome

    state = current_state()
    created, outcome = await transaction(state.pool, store)
    if created and state.metrics is not None:
        state.metrics.on_signals(signal.source, 1)
    response = jsonify({**outcome, "duplicate": not created})
    response.status_code = 201 if created else 200
    return response
