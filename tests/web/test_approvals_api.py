"""Approvals over real HTTP: at most one execution, 409/410/404/401, pagination."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

from .conftest import Api

NEWSLETTER = {
    "source": "gmail",
    "id": "m-1",
    "type": "newsletter",
    "data": {"messageId": "m-1", "from": "news@x.io", "subject": "Weekly digest"},
}


async def make_request(api: Api, token: str, external_id: str = "m-1") -> int:
    async with api.client(token) as client:
        body = {
            **NEWSLETTER,
            "id": external_id,
            "data": {**NEWSLETTER["data"], "messageId": external_id},
        }
        response = await client.post("/api/events/ingest", json=body)
    approval_id = response.json()["decision"]["approval_id"]
    assert isinstance(approval_id, int)
    return approval_id


async def test_fifty_concurrent_approvals_make_exactly_one_execution(api: Api) -> None:
    api.state.respond_wait_s = 0.0  # no executor runs here: answer 202 at once
    _, token = await api.new_user("ann@example.com")
    approval_id = await make_request(api, token)
    statuses: list[int] = []
    bodies: list[dict] = []
    async with api.client(token) as client:

        async def approve() -> None:
            r = await client.post(
                f"/api/approvals/{approval_id}/respond", json={"action": "approve"}
            )
            statuses.append(r.status_code)
            bodies.append(r.json())

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(approve)
    assert sorted(statuses) == [202] + [409] * 49
    winner = next(b for b in bodies if b.get("status") == "approved")
    conflicts = [b for b in bodies if "error" in b]
    assert {c["status_was"] for c in conflicts} == {"approved"}
    assert {c["execution_id"] for c in conflicts} == {winner["execution"]["id"]}
    async with api.pool.connection() as conn:
        cur = await conn.execute("select action, params from executions")
        rows = await cur.fetchall()
    assert rows == [{"action": "gmail.archive", "params": {"messageId": "m-1"}}]


async def test_approve_after_reject_is_409(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    approval_id = await make_request(api, token)
    async with api.client(token) as client:
        rejected = await client.post(
            f"/api/approvals/{approval_id}/respond", json={"action": "reject", "reason": "keep it"}
        )
        late = await client.post(
            f"/api/approvals/{approval_id}/respond", json={"action": "approve"}
        )
        history = (await client.get("/api/approvals/history")).json()["approvals"]
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert late.status_code == 409
    assert late.json()["status_was"] == "rejected"
    assert [(h["id"], h["status"], h["response_reason"]) for h in history] == [
        (approval_id, "rejected", "keep it")
    ]
    async with api.pool.connection() as conn:
        cur = await conn.execute("select count(*) as n from executions")
        assert (await cur.fetchone())["n"] == 0


async def test_expired_request_is_410_and_shows_in_history(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    approval_id = await make_request(api, token)
    async with api.pool.connection() as conn:
        await conn.execute(
            "update approval_requests set expires_at = %s where id = %s",
            (datetime.now(UTC) - timedelta(seconds=1), approval_id),
        )
    async with api.client(token) as client:
        response = await client.post(
            f"/api/approvals/{approval_id}/respond", json={"action": "approve"}
        )
        pending = (await client.get("/api/approvals/pending")).json()["approvals"]
        history = (await client.get("/api/approvals/history")).json()["approvals"]
    assert response.status_code == 410
    assert response.json() == {"error": "approval request has expired"}
    assert pending == [] and [h["id"] for h in history] == [approval_id]


async def test_another_users_request_is_404_and_unknown_is_404(api: Api) -> None:
    _, ann = await api.new_user("ann@example.com")
    _, bob = await api.new_user("bob@example.com")
    approval_id = await make_request(api, ann)
    async with api.client(bob) as client:
        theirs = await client.post(
            f"/api/approvals/{approval_id}/respond", json={"action": "approve"}
        )
        missing = await client.post("/api/approvals/999999/respond", json={"action": "approve"})
        listed = (await client.get("/api/approvals/pending")).json()["approvals"]
    assert theirs.status_code == 404 and missing.status_code == 404
    assert theirs.json() == missing.json() == {"error": "approval request not found"}
    assert listed == []


async def test_no_token_is_401(api: Api) -> None:
    _, ann = await api.new_user("ann@example.com")
    approval_id = await make_request(api, ann)
    async with api.client() as client:
        response = await client.post(
            f"/api/approvals/{approval_id}/respond", json={"action": "approve"}
        )
        pending = await client.get("/api/approvals/pending")
    assert response.status_code == 401 and pending.status_code == 401


async def test_bad_respond_bodies_name_the_field(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    approval_id = await make_request(api, token)
    async with api.client(token) as client:
        bad = await client.post(
            f"/api/approvals/{approval_id}/respond", json={"action": "maybe", "user_id": 2}
        )
        empty = await client.post(f"/api/approvals/{approval_id}/respond", json={})
    assert bad.status_code == 400
    assert bad.json()["fields"] == {
        "action": "must be 'approve' or 'reject'",
        "user_id": "is not a known field",
    }
    assert empty.status_code == 400


async def test_pending_items_carry_action_params_reason_urgency_expiry_and_signal(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    ids = [await make_request(api, token, f"m-{n}") for n in range(3)]
    async with api.client(token) as client:
        page1 = (await client.get("/api/approvals/pending", params={"limit": 2})).json()
        page2 = (
            await client.get(
                "/api/approvals/pending", params={"limit": 2, "cursor": page1["next_cursor"]}
            )
        ).json()
    items = page1["approvals"] + page2["approvals"]
    assert [i["id"] for i in items] == ids[::-1]
    assert page2["next_cursor"] is None
    item = items[0]
    assert item["action"] == "gmail.archive" and item["params"] == {"messageId": "m-2"}
    assert item["urgency"] == "low" and "Newsletter" in item["reason"]
    assert item["signal"]["summary"] == {"from": "news@x.io", "subject": "Weekly digest"}
    assert datetime.fromisoformat(item["expires_at"]) > datetime.now(UTC) + timedelta(hours=71)


async def test_expire_sweep_needs_an_admin_token_or_loopback(api: Api) -> None:
    _, user = await api.new_user("ann@example.com")
    _, admin = await api.new_user("ops@example.com", admin=True)
    approval_id = await make_request(api, user)
    async with api.pool.connection() as conn:
        await conn.execute(
            "update approval_requests set expires_at = now() - interval '1 minute' where id = %s",
            (approval_id,),
        )
    async with api.client(user) as client:
        forbidden = await client.post("/api/approvals/expire-sweep")
    async with api.client(admin) as client:
        swept = await client.post("/api/approvals/expire-sweep")
    async with api.client() as client:  # the test runs on loopback
        again = await client.post("/api/approvals/expire-sweep")
    assert forbidden.status_code == 403
    assert swept.status_code == 200 and swept.json() == {"expired": 1}
    assert again.json() == {"expired": 0}
