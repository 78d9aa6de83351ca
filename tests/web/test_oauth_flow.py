"""Connecting an account over HTTP: PKCE code flow, single-use expiring state, tokens at rest."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import httpx

from skytwin.fakegoogle import World

from .conftest import Api
from .live import live_pipeline

EMAIL = "ada@example.com"


async def consent(api: Api, token: str) -> str:
    """Start the flow as the signed-in user; follow the fake's consent; return the callback URL."""
    async with api.client(token) as client:
        start = await client.get("/oauth/google/start")
    assert start.status_code == 200, start.text
    auth_url = start.json()["authorization_url"]
    query = parse_qs(urlparse(auth_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["access_type"] == ["offline"]
    assert query["redirect_uri"] == [api.base_url + "/oauth/google/callback"]
    async with httpx.AsyncClient() as browser:
        answer = await browser.get(auth_url, follow_redirects=False)
    assert answer.status_code == 302
    return answer.headers["location"]


async def test_the_code_flow_connects_the_signed_in_users_account_once(api: Api) -> None:
    world = World(seed=1)
    refresh_seen = world.secrets_issued
    world.add_account(EMAIL)
    user_id, token = await api.new_user("ann@example.com")
    async with live_pipeline(api, world):
        callback = await consent(api, token)
        async with httpx.AsyncClient() as browser:
            first = await browser.get(callback, follow_redirects=False)
            replay = await browser.get(callback, follow_redirects=False)
    assert first.status_code == 302 and first.headers["location"] == "/?connected=1"
    assert replay.status_code == 400
    assert "used already or expired" in replay.json()["error"]
    async with api.pool.connection() as conn:
        cur = await conn.execute("select * from oauth_connections")
        rows = await cur.fetchall()
        cur = await conn.execute("select * from oauth_states")
        states = await cur.fetchall()
    assert [(r["user_id"], r["account_email"], r["status"]) for r in rows] == [
        (user_id, EMAIL, "active")
    ]
    # Nothing Google handed out is stored in plain text, in any column of any row.
    raw = repr(rows) + repr(states)
    assert refresh_seen and not [s for s in refresh_seen if s in raw]
    assert rows[0]["refresh_token_enc"] and rows[0]["access_token_enc"]


async def test_an_expired_or_unknown_state_is_refused(api: Api) -> None:
    world = World(seed=2)
    world.add_account(EMAIL)
    _, token = await api.new_user("ann@example.com")
    async with live_pipeline(api, world):
        callback = await consent(api, token)
        async with api.pool.connection() as conn:
            await conn.execute("update oauth_states set expires_at = now() - interval '1 second'")
        async with httpx.AsyncClient() as browser:
            expired = await browser.get(callback, follow_redirects=False)
            forged = await browser.get(
                api.base_url + "/oauth/google/callback?code=x&state=not-ours"
            )
            missing = await browser.get(api.base_url + "/oauth/google/callback")
    assert expired.status_code == 400 and forged.status_code == 400
    assert missing.status_code == 400
    assert missing.json()["fields"] == {"code": "is required", "state": "is required"}
    async with api.pool.connection() as conn:
        cur = await conn.execute("select count(*) as n from oauth_connections")
        assert (await cur.fetchone())["n"] == 0


async def test_start_needs_a_token_and_a_configured_client(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    async with api.client() as anonymous:
        assert (await anonymous.get("/oauth/google/start")).status_code == 401
    async with api.client(token) as client:
        unconfigured = await client.get("/oauth/google/start")
    assert unconfigured.status_code == 503
    assert "SKYTWIN_GOOGLE_CLIENT_ID" in unconfigured.json()["error"]
