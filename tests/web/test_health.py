"""Health endpoints over real HTTP (Hypercorn on a loopback port) against real PostgreSQL."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from skytwin.config import Settings
from skytwin.metrics import Metrics
from skytwin.store import Pool
from skytwin.web import CheckResult, WebState, create_app, serve_web


def make_settings(tmp_path: Path, database_url: str | None) -> Settings:
    return dataclasses.replace(
        Settings.from_env({"SKYTWIN_HOME": str(tmp_path), "SKYTWIN_BIND": "127.0.0.1:0"}),
        database_url=database_url,
        db_check_timeout_s=1.0,
    )


@pytest.fixture
async def serve_state(
    nursery: trio.Nursery,
) -> AsyncIterator[object]:
    """Start the app for a WebState; yields a function returning its base URL."""
    stop = trio.Event()

    async def start(state: WebState) -> str:
        binds = await nursery.start(serve_web, create_app(state), state.settings, stop.wait)
        return str(binds[0])

    yield start
    stop.set()


async def test_live_and_ready_answer_ok(serve_state, database_url, tmp_path) -> None:
    pool = Pool(database_url)
    base = await serve_state(WebState(make_settings(tmp_path, database_url), pool))
    async with httpx.AsyncClient(base_url=base) as client:
        live = await client.get("/api/health/live")
        ready = await client.get("/api/health/ready")
        legacy = await client.get("/api/health")
    assert live.status_code == 200
    assert live.json() == {"status": "ok", "service": "skytwin"}
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": "ok"}
    assert isinstance(body["dbLatencyMs"], float) and body["dbLatencyMs"] >= 0
    assert body["uptime"] >= 0
    assert body["timestamp"].endswith("+00:00")
    assert legacy.status_code == 200
    assert legacy.json()["status"] == "ok" and legacy.json()["service"] == "skytwin"
    await pool.close()


async def test_ready_is_503_naming_the_database_when_it_refuses(serve_state, tmp_path) -> None:
    # A socket directory with no server in it: connecting fails at once.
    url = f"postgresql://postgres@/postgres?host={tmp_path}&port=5999"
    pool = Pool(url, connect_timeout_s=1.0)
    base = await serve_state(WebState(make_settings(tmp_path, url), pool))
    async with httpx.AsyncClient(base_url=base) as client:
        ready = await client.get("/api/health/ready")
        live = await client.get("/api/health/live")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"].startswith("failing: DatabaseUnavailable")
    assert body["dbLatencyMs"] is None
    assert live.status_code == 200


async def test_ready_is_a_quick_503_when_the_database_hangs(
    serve_state, nursery: trio.Nursery, tmp_path
) -> None:
    # A TCP server that accepts connections and never says a word: the
    # handshake hangs, as with a frozen database. The probe has its own deadline.
    listeners = await nursery.start(partial(trio.serve_tcp, _silent, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    pool = Pool(url, connect_timeout_s=30.0)
    base = await serve_state(WebState(make_settings(tmp_path, url), pool))
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        started = time.perf_counter()
        ready = await client.get("/api/health/ready")
        elapsed = time.perf_counter() - started
        live = await client.get("/api/health/live")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "failing: no answer within 1 s"
    assert elapsed < 2.0
    assert live.status_code == 200


async def _silent(stream: trio.SocketStream) -> None:
    await trio.sleep_forever()


async def test_extra_checks_show_by_name(serve_state, database_url, tmp_path) -> None:
    pool = Pool(database_url)
    state = WebState(make_settings(tmp_path, database_url), pool)

    async def users_supervisor() -> CheckResult:
        return CheckResult(False, "gave up on 2 children")

    state.checks["users"] = users_supervisor
    base = await serve_state(state)
    async with httpx.AsyncClient(base_url=base) as client:
        ready = await client.get("/api/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {
        "database": "ok",
        "users": "failing: gave up on 2 children",
    }
    await pool.close()


async def test_errors_are_json_never_html(serve_state, database_url, tmp_path) -> None:
    pool = Pool(database_url)
    base = await serve_state(WebState(make_settings(tmp_path, database_url), pool))
    async with httpx.AsyncClient(base_url=base) as client:
        missing = await client.get("/no/such/page")
        wrong_method = await client.post("/api/health/live")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == {"error": "not found"}
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()
    await pool.close()


async def test_the_live_fast_path_answers_as_the_quart_route_does(
    serve_state, database_url, tmp_path
) -> None:
    """Over Hypercorn, GET/HEAD /api/health/live skip Quart; the answer must not change."""
    metrics = Metrics()
    state = WebState(make_settings(tmp_path, database_url), Pool(database_url), metrics=metrics)
    app = create_app(state)
    quart = await app.test_client().get("/api/health/live")
    base = await serve_state(state)
    async with httpx.AsyncClient(base_url=base) as client:
        fast = await client.get("/api/health/live")
        head = await client.head("/api/health/live")
        with_body = await client.request("GET", "/api/health/live", content=b"x")
    assert fast.status_code == head.status_code == with_body.status_code == 200
    assert fast.content == await quart.get_data() == with_body.content
    assert head.content == b""

    def comparable(headers: Any) -> dict[str, str]:
        skip = {"date", "server", "content-length"}
        return {k.lower(): v for k, v in headers.items() if k.lower() not in skip}

    assert comparable(fast.headers) == comparable(quart.headers) == comparable(with_body.headers)
    assert fast.headers["content-length"] == str(len(fast.content))
    # Counted like any other answer. GET three times: the test client's and the one with
    # a body went through Quart, one took the fast path; HEAD once.
    rendered = metrics.render().decode()
    assert 'method="GET",route="/api/health/live",status="200"} 3.0' in rendered
    assert 'method="HEAD",route="/api/health/live",status="200"} 1.0' in rendered
