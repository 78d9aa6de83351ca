"""``GET /api/status`` over real HTTP, with the real poller polling the fake Google."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from skytwin.fakegoogle import World
from skytwin.nursery import Supervisor
from skytwin.web.status_api import RECONNECT_URL, wall_clock

from .conftest import Api
from .live import live_pipeline

EMAIL = "ada@example.com"
Body = dict[str, Any]


async def eventually(api: Api, token: str, predicate: Callable[[Body], bool]) -> Body:
    """Poll /api/status until ``predicate`` holds; fail after 15 s."""
    body: Body = {}
    async with api.client(token) as client:
        with trio.move_on_after(15):
            while True:
                response = await client.get("/api/status")
                assert response.status_code == 200, response.text
                body = response.json()
                if predicate(body):
                    return body
                await trio.sleep(0.05)
    raise AssertionError(f"status never matched; last answer: {json.dumps(body, indent=2)}")


def parse(iso: str | None) -> datetime:
    assert iso is not None
    return datetime.fromisoformat(iso)


def newsletter_world() -> World:
    world = World()
    world.add_account(EMAIL)
    world.add_message(
        EMAIL, sender="news@weekly.example", subject="The weekly newsletter",
        labels=("INBOX", "UNREAD", "CATEGORY_PROMOTIONS"),
    )
    return world


def polled_once(body: Body) -> bool:
    account = body["accounts"][0]
    return account["polling"] is not None and account["polling"]["last_success_at"] is not None


async def test_a_healthy_account_shows_its_poll_task_breaker_and_connectors(api: Api) -> None:
    user_id, token = await api.new_user(EMAIL)
    world = newsletter_world()
    async with live_pipeline(api, world) as live:
        connection_id = await live.connect(user_id, EMAIL)
        before = datetime.now(UTC)
        body = await eventually(api, token, polled_once)

    assert body["user"] == {"email": EMAIL}
    assert body["counts"]["signals"] == 1
    assert body["counts"]["pending_approvals"] == 1
    [account] = body["accounts"]
    assert account["connection_id"] == connection_id
    assert account["account_email"] == EMAIL
    assert (account["status"], account["needs_reauth"], account["reconnect_url"]) == (
        "active", False, None,
    )
    assert account["supervisor"]["state"] == "running"
    assert account["supervisor"]["restarts"] == 0
    assert parse(account["last_success_at"]) >= before - timedelta(seconds=1)
    assert account["last_error"] is None and account["last_error_at"] is None
    assert account["breaker"]["state"] == "closed"
    assert account["breaker"]["next_probe_at"] is None
    polling = account["polling"]
    assert polling["cycles_ok"] >= 1 and polling["signals_new"] == 1
    assert polling["last_error"] is None
    assert parse(polling["last_success_at"]) >= before - timedelta(seconds=1)
    assert {c["connector"]: (c["synced"], c["last_error"]) for c in account["connectors"]} == {
        "gmail": (True, None),
        "calendar": (True, None),
    }
    assert all(parse(c["last_success_at"]) >= before - timedelta(seconds=1)
               for c in account["connectors"])


async def test_a_permanent_error_is_shown_but_does_not_open_the_breaker(api: Api) -> None:
    user_id, token = await api.new_user(EMAIL)
    world = newsletter_world()
    # A non-retryable 400 on every Gmail call: not an outage, so polling is not paused.
    plan = world.faults("gmail", EMAIL)
    plan.down_until, plan.down_status = math.inf, 400
    async with live_pipeline(api, world) as live:
        await live.connect(user_id, EMAIL)
        body = await eventually(
            api, token, lambda b: b["accounts"][0]["polling"]["cycles_failed"] >= 5
        )
    [account] = body["accounts"]
    assert account["breaker"]["state"] == "closed"
    assert "400" in account["polling"]["last_error"]


async def test_an_open_breaker_shows_when_it_will_probe(api: Api) -> None:
    user_id, token = await api.new_user(EMAIL)
    world = newsletter_world()
    # Gmail is down: every request gets a 503 with "Retry-After: 0", so each cycle
    # spends its retries at once and fails fast (an outage, which the breaker counts).
    plan = world.faults("gmail", EMAIL)
    plan.down_until, plan.down_status, plan.down_retry_after = math.inf, 503, "0"
    async with live_pipeline(api, world) as live:
        await live.connect(user_id, EMAIL)
        body = await eventually(api, token, lambda b: b["accounts"][0]["breaker"] is not None
                                and b["accounts"][0]["breaker"]["state"] == "open")
        opened_seen_at = datetime.now(UTC)

    [account] = body["accounts"]
    breaker = account["breaker"]
    assert breaker["open_count"] == 1
    assert "503" in breaker["last_error"]
    # The poller's breaker stays open 300 s: its probe is five minutes out, on the wall clock.
    probe_at = parse(breaker["next_probe_at"])
    assert opened_seen_at + timedelta(seconds=290) < probe_at <= opened_seen_at + timedelta(
        seconds=301
    )
    assert account["polling"]["cycles_failed"] >= 3
    assert "503" in account["polling"]["last_error"]
    assert "503" in account["last_error"]
    gmail = next(c for c in account["connectors"] if c["connector"] == "gmail")
    assert gmail["synced"] is False and "503" in gmail["last_error"]
    # A failing Google account is not a re-authorization, and its task keeps running.
    assert account["status"] == "active" and account["reconnect_url"] is None
    assert account["supervisor"]["state"] == "running"


async def test_a_revoked_grant_shows_needs_reauth_with_a_reconnect_link(api: Api) -> None:
    user_id, token = await api.new_user(EMAIL)
    world = newsletter_world()
    async with live_pipeline(api, world) as live:
        await live.connect(user_id, EMAIL)
        await eventually(api, token, polled_once)
        world.revoke(EMAIL)
        body = await eventually(api, token, lambda b: b["accounts"][0]["status"] == "needs_reauth")
        # The poll task ends (it has nothing to do until the user reconnects).
        body = await eventually(
            api, token, lambda b: b["accounts"][0]["supervisor"]["state"] == "stopped"
        )
        issued = list(world.secrets_issued)

    [account] = body["accounts"]
    assert account["needs_reauth"] is True
    assert account["reconnect_url"] == RECONNECT_URL
    assert "invalid_grant" in account["status_reason"]
    # The last success before the revocation is still known, and the error since.
    assert account["last_success_at"] is not None
    assert "invalid_grant" in account["last_error"]
    assert parse(account["last_error_at"]) >= parse(account["last_success_at"])
    # No token, client secret or code the fake ever issued appears in the answer.
    text = json.dumps(body)
    assert issued and not [secret for secret in issued if secret in text]


async def test_a_crashed_poll_task_shows_its_restarts_and_last_error(api: Api) -> None:
    user_id, token = await api.new_user(EMAIL)
    async with api.pool.connection() as conn:
        cur = await conn.execute(
            "insert into oauth_connections (user_id, provider, account_email) "
            "values (%s, 'google', %s) returning id",
            (user_id, EMAIL),
        )
        connection_id = (await cur.fetchone())["id"]
    crashes = 0

    async def flaky(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal crashes
        task_status.started()
        if crashes == 0:
            crashes += 1
            raise RuntimeError("boom in the poll loop")
        await trio.sleep_forever()

    users = Supervisor("users", shutdown_grace_s=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(users.run)
        api.state.supervisors = [users]
        await users.start_child(f"account:{connection_id}", flaky)
        body = await eventually(
            api, token, lambda b: b["accounts"][0]["supervisor"]["restarts"] == 1
            and b["accounts"][0]["supervisor"]["state"] == "running"
        )
        await users.shutdown()

    supervisor = body["accounts"][0]["supervisor"]
    assert "boom in the poll loop" in supervisor["last_error"]
    assert parse(supervisor["since"]) <= datetime.now(UTC)
    # No poller in this process: the account has no breaker or poll record, not an error.
    assert body["accounts"][0]["breaker"] is None and body["accounts"][0]["polling"] is None


async def test_each_user_sees_only_their_own_accounts(api: Api) -> None:
    user_id, _ = await api.new_user(EMAIL)
    _, other_token = await api.new_user("bob@example.com")
    async with live_pipeline(api, newsletter_world()) as live:
        await live.connect(user_id, EMAIL)
        async with api.client(other_token) as client:
            response = await client.get("/api/status")
        async with api.client() as anonymous:
            unauthenticated = await anonymous.get("/api/status")
    assert response.status_code == 200
    assert response.json()["accounts"] == []
    assert response.json()["user"] == {"email": "bob@example.com"}
    assert unauthenticated.status_code == 401
    assert "error" in unauthenticated.json()


async def test_wall_clock_converts_trio_times_both_ways() -> None:
    now = datetime.now(UTC)
    ahead = parse(wall_clock(trio.current_time() + 300.0))
    behind = parse(wall_clock(trio.current_time() - 60.0))
    assert abs((ahead - now) - timedelta(seconds=300)) < timedelta(seconds=2)
    assert abs((now - behind) - timedelta(seconds=60)) < timedelta(seconds=2)
    assert wall_clock(None) is None and wall_clock(math.inf) is None
