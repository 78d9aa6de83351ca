"""/api/signals and /api/events/ingest: auth, validation, idempotency, isolation."""

from __future__ import annotations

import trio

from skytwin.metrics import Metrics

from .conftest import Api

INVITE = {
    "source": "gmail",
    "id": "evt-1",
    "type": "newsletter",
    "occurred_at": "2026-11-27T09:00:00Z",
    "data": {"messageId": "m-1", "from": "news@x.io", "subject": "Weekly"},
}


async def test_requests_without_a_valid_token_get_401(api: Api) -> None:
    async with api.client() as anonymous:
        missing = await anonymous.get("/api/signals")
        malformed = await anonymous.get("/api/signals", headers={"Authorization": "Basic abc"})
        wrong = await anonymous.get("/api/signals", headers={"Authorization": "Bearer st_nope"})
        ingest = await anonymous.post("/api/events/ingest", json=INVITE)
    for response in (missing, malformed, wrong, ingest):
        assert response.status_code == 401
        assert "error" in response.json()
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert missing.json()["error"] == "missing Authorization: Bearer <token> header"
    assert wrong.json()["error"] == "invalid or revoked token"


async def test_ingest_is_idempotent_and_returns_the_first_result(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    async with api.client(token) as client:
        first = await client.post("/api/events/ingest", json=INVITE)
        again = await client.post("/api/events/ingest", json=INVITE)
    assert first.status_code == 201
    assert again.status_code == 200
    body = first.json()
    assert body["duplicate"] is False and again.json()["duplicate"] is True
    assert {k: v for k, v in again.json().items() if k != "duplicate"} == {
        k: v for k, v in body.items() if k != "duplicate"
    }
    assert body["decision"]["action"] == "gmail.archive"
    assert body["decision"]["params"] == {"messageId": "m-1"}
    assert body["decision"]["requires_approval"] is True
    async with api.pool.connection() as conn:
        cur = await conn.execute("select count(*) as n from approval_requests")
        assert (await cur.fetchone())["n"] == 1


async def test_a_signal_from_another_source_is_stored_without_a_decision(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    async with api.client(token) as client:
        response = await client.post(
            "/api/events/ingest", json={**INVITE, "source": "zapier", "type": "webhook"}
        )
        listed = (await client.get("/api/signals")).json()["signals"]
    assert response.status_code == 201
    assert response.json()["decision"] is None
    assert [(s["source"], s["type"], s["external_id"]) for s in listed] == [
        ("zapier", "webhook", "evt-1")
    ]
    assert listed[0]["occurred_at"] == "2026-11-27T09:00:00+00:00"


async def test_concurrent_retries_of_one_ingest_make_one_decision(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    statuses: list[int] = []
    async with api.client(token) as client:

        async def post() -> None:
            statuses.append((await client.post("/api/events/ingest", json=INVITE)).status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(post)
    assert sorted(statuses) == [200] * 9 + [201]
    async with api.pool.connection() as conn:
        cur = await conn.execute("select count(*) as n from decisions")
        assert (await cur.fetchone())["n"] == 1


async def test_ingest_names_every_bad_field(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    bad = {
        "source": "Not A Source",
        "type": "",
        "occurred_at": "yesterday",
        "data": [1, 2],
        "user_id": 7,
    }
    async with api.client(token) as client:
        response = await client.post("/api/events/ingest", json=bad)
        not_json = await client.post(
            "/api/events/ingest", content=b"{", headers={"Content-Type": "application/json"}
        )
        not_object = await client.post("/api/events/ingest", json=[INVITE])
        wrong_type = await client.post("/api/events/ingest", content=b"source=x")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid request"
    assert set(response.json()["fields"]) == {
        "source",
        "id",
        "type",
        "occurred_at",
        "data",
        "user_id",
    }
    assert response.json()["fields"]["id"] == "is required"
    assert not_json.status_code == 400 and not_object.status_code == 400
    assert wrong_type.status_code == 415
    async with api.pool.connection() as conn:
        cur = await conn.execute("select count(*) as n from signals")
        assert (await cur.fetchone())["n"] == 0


async def test_signals_are_the_callers_own_newest_first_and_paginated(api: Api) -> None:
    _, ann = await api.new_user("ann@example.com")
    _, bob = await api.new_user("bob@example.com")
    async with api.client(ann) as client:
        for n in range(5):
            await client.post("/api/events/ingest", json={**INVITE, "id": f"evt-{n}"})
    async with api.client(bob) as client:
        await client.post("/api/events/ingest", json={**INVITE, "id": "bob-only"})
        bobs = (await client.get("/api/signals")).json()
    assert [s["external_id"] for s in bobs["signals"]] == ["bob-only"]

    seen: list[str] = []
    async with api.client(ann) as client:
        cursor = None
        while True:
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/signals", params=params)).json()
            seen += [s["external_id"] for s in page["signals"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        first = page["signals"][0] if page["signals"] else None
        too_many = await client.get("/api/signals", params={"limit": "501"})
        bad_cursor = await client.get("/api/signals", params={"cursor": "abc"})
    assert seen == [f"evt-{n}" for n in (4, 3, 2, 1, 0)]
    assert first is not None and set(first) == {
        "id",
        "source",
        "type",
        "external_id",
        "occurred_at",
        "data",
    }
    assert too_many.status_code == 400 and too_many.json()["fields"] == {
        "limit": "must be between 1 and 500"
    }
    assert bad_cursor.status_code == 400


async def test_new_ingested_signals_are_counted_once_with_a_bounded_source_label(
    api: Api,
) -> None:
    api.state.metrics = Metrics()
    _, token = await api.new_user("ann@example.com")
    async with api.client(token) as client:
        for payload in (INVITE, INVITE, {**INVITE, "source": "zapier", "id": "z-1"}):
            response = await client.post("/api/events/ingest", json=payload)
            assert response.status_code in (200, 201)
    rendered = api.state.metrics.render().decode()
    assert 'skytwin_signals_ingested_total{source="gmail"} 1.0' in rendered
    assert 'skytwin_signals_ingested_total{source="other"} 1.0' in rendered
    assert "zapier" not in rendered
