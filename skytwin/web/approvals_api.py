"""``/api/approvals/…`` and ``/api/executions/{id}``: deciding on proposed actions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import trio
from quart import Blueprint, Response, jsonify, request

from ..store import approvals as store
from ..store import transaction
from ..store.pool import Connection
from .auth import authenticated, current_principal
from .errors import ApiError
from .state import current_state
from .validation import ValidationFailed, json_object, query_cursor, query_int, text

blueprint = Blueprint("approvals", __name__)

MAX_LIMIT = 500


def _now() -> datetime:
    return datetime.now(UTC)


def _page_response(items: list[dict[str, Any]], next_before: int | None) -> Response:
    return jsonify(
        {"approvals": items, "next_cursor": str(next_before) if next_before is not None else None}
    )


@blueprint.get("/api/approvals/pending")
@authenticated
async def pending() -> Response:
    """The caller's pending, unexpired approval requests, newest first."""
    limit = query_int("limit", default=50, minimum=1, maximum=MAX_LIMIT)
    before = query_cursor()
    async with current_state().pool.connection() as conn:
        items, nxt = await store.list_pending(
            conn, current_principal().user_id, now=_now(), limit=limit, before_id=before
        )
    return _page_response(items, nxt)


@blueprint.get("/api/approvals/history")
@authenticated
async def history() -> Response:
    """The caller's answered and expired approval requests, newest first."""
    limit = query_int("limit", default=50, minimum=1, maximum=MAX_LIMIT)
    before = query_cursor()
    async with current_state().pool.connection() as conn:
        items, nxt = await store.list_history(
            conn, current_principal().user_id, now=_now(), limit=limit, before_id=before
        )
    return _page_response(items, nxt)


def execution_json(execution: store.Execution) -> dict[str, Any]:
    """The API representation of an execution."""
    return {
        "id": execution.id,
        "approval_id": execution.approval_id,
        "action": execution.action,
        "params": execution.params,
        "status": execution.status,
        "attempts": execution.attempts,
        "result": execution.result,
        "error": execution.error,
    }


@blueprint.post("/api/approvals/<int:approval_id>/respond")
@authenticated
async def respond(approval_id: int) -> Response:
    """Approve or reject one request; at most one execution ever results."""
    body = await json_object()
    errors: dict[str, str] = {}
    action = body.get("action")
    if action not in ("approve", "reject"):
        errors["action"] = "must be 'approve' or 'reject'"
    reason = text(body, "reason", errors, required=False, max_len=1000)
    for name in sorted(set(body) - {"action", "reason"}):
        errors[name] = "is not a known field"
    if errors:
        raise ValidationFailed(errors)

    user_id = current_principal().user_id
    now = _now()

    async def answer(conn: Connection) -> store.RespondOutcome:
        return await store.respond(
            conn, user_id, approval_id, approve=action == "approve", reason=reason, now=now
        )

    outcome = await transaction(current_state().pool, answer)
    if outcome.result == "not_found":
        raise ApiError("approval request not found", status=404)
    if outcome.result == "already_answered":
        raise ApiError(
            f"approval request was already {outcome.status}",
            status=409,
            status_was=outcome.status,
            responded_at=outcome.responded_at.isoformat() if outcome.responded_at else None,
            execution_id=outcome.execution_id,
        )
    if outcome.result == "expired":
        raise ApiError("approval request has expired", status=410)
    if outcome.result == "rejected":
        return jsonify({"id": approval_id, "status": "rejected", "execution": None})

    assert outcome.execution_id is not None
    current_state().kick_executor()
    execution = await _wait_for_execution(user_id, outcome.execution_id)
    response = jsonify(
        {"id": approval_id, "status": "approved", "execution": execution_json(execution)}
    )
    if execution.status not in store.FINISHED:
        response.status_code = 202
        response.headers["Location"] = f"/api/executions/{execution.id}"
    return response


async def _wait_for_execution(user_id: int, execution_id: int) -> store.Execution:
    """The execution once finished, or as it is after ``respond_wait_s``."""
    state = current_state()
    # Register before looking, so a finish between the look and the wait is not missed.
    finished = state.finished.setdefault(execution_id, trio.Event())
    with trio.move_on_after(state.respond_wait_s):
        execution = await _read_execution(user_id, execution_id)
        if execution.status in store.FINISHED:
            return execution
        await finished.wait()
    return await _read_execution(user_id, execution_id)


async def _read_execution(user_id: int, execution_id: int) -> store.Execution:
    async with current_state().pool.connection() as conn:
        execution = await store.get_execution(conn, user_id, execution_id)
    assert execution is not None
    return execution


@blueprint.get("/api/executions/<int:execution_id>")
@authenticated
async def get_execution(execution_id: int) -> Response:
    """One of the caller's executions."""
    async with current_state().pool.connection() as conn:
        execution = await store.get_execution(conn, current_principal().user_id, execution_id)
    if execution is None:
        raise ApiError("execution not found", status=404)
    return jsonify(execution_json(execution))


@blueprint.post("/api/approvals/expire-sweep")
async def expire_sweep() -> Response:
    """Operators: expire overdue requests now (an admin token, or a loopback caller)."""
    await _require_operator()
    async with current_state().pool.connection() as conn:
        expired = await store.expire_pending(conn, now=_now())
    return jsonify({"expired": expired})


async def _require_operator() -> None:
    from ..store import users
    from .auth import Unauthorized, bearer_token_or_none

    token = bearer_token_or_none()
    if token is not None:
        async with current_state().pool.connection() as conn:
            principal = await users.principal_for_token(conn, token)
        if principal is None:
            raise Unauthorized("invalid or revoked token")
        if not principal.is_admin:
            raise ApiError("this endpoint needs an admin token", status=403)
        return
    remote = request.remote_addr or ""
    if remote not in ("127.0.0.1", "::1") and not remote.startswith("127."):
        raise Unauthorized("operators must use an admin token (or call from loopback)")
