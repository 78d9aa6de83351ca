"""Health endpoints: liveness, readiness and the legacy summary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import trio
from quart import Blueprint, Response, jsonify

from .. import __version__
from ..store import check_database
from .state import CheckResult, current_state

blueprint = Blueprint("health", __name__)




LIVE_PATH = "/api/health/live"
# The one liveness answer: this route's, and web/serve.py's fast path ahead of Quart.
LIVE_BODY = b'{"service":"skytwin","status":"ok"}\n'


@blueprint.get(LIVE_PATH)
async def live() -> Response:
    """200 while the event loop runs; checks no dependency."""
    return Response(LIVE_BODY, content_type="application/json")


async def readiness() -> tuple[bool, dict[str, Any]]:
    """Run every readiness check under its own deadline; return (ok, body)."""
    state = current_state()
    db = await check_database(state.pool, state.settings.db_check_timeout_s)
    checks: dict[str, str] = {"database": "ok" if db.ok else f"failing: {db.error}"}
    results: dict[str, CheckResult] = {}

    async def run_check(name: str) -> None:
        with trio.move_on_after(state.settings.db_check_timeout_s) as scope:
            results[name] = await state.checks[name]()
        if scope.cancelled_caught:
            results[name] = CheckResult(False, "check timed out")

    async with trio.open_nursery() as nursery:
        for name in state.checks:
            nursery.start_soon(run_check, name)
    for name, result in sorted(results.items()):
        checks[name] = "ok" if result.ok else f"failing: {result.detail or 'not ok'}"

    ok = db.ok and all(r.ok for r in results.values())
    body: dict[str, Any] = {
        "status": "ok" if ok else "degraded",
        "checks": checks,
        "dbLatencyMs": db.latency_ms,
        "uptime": state.uptime_s(),
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    return ok, body


@blueprint.get("/api/health/ready")
async def ready() -> Response:
    """200 when every dependency answers; 503 naming the failing check otherwise."""
    ok, body = await readiness()
    response = jsonify(body)
    response.status_code = 200 if ok else 503
    return response


@blueprint.get("/api/health")
async def summary() -> Response:
    """The legacy one-glance summary (same verdict as readiness)."""
    ok, body = await readiness()
    response = jsonify(
        {
            "status": body["status"],
            "service": "skytwin",
            "version": __version__,
            "uptime": body["uptime"],
            "database": body["checks"]["database"],
        }
    )
    response.status_code = 200 if ok else 503
    return response
