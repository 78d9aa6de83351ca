"""The fake Google over real HTTP: auth, OAuth endpoints, faults, wire details, honesty."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio
from trio.testing import MockClock

from skytwin.fakegoogle import FULL_SCOPES, ROUTES, Fault
from tests.fakegoogle import discovery
from tests.fakegoogle.harness import EMAIL, READ_TIMEOUT_S, Rig, virtual_now


def bearer(rig: Rig) -> dict[str, str]:
    """An Authorization header with a fresh access token for the rig's account."""
    return {"authorization": "Bearer " + rig.world.mint_access_token(EMAIL, FULL_SCOPES)}


def test_every_route_is_a_method_of_the_discovery_documents() -> None:
    for route in ROUTES:
        if route.api == "oauth":
            continue
        spec = discovery.methods()[route.operation]
        assert (route.method, route.template) == (spec.http_method, spec.path)


async def test_api_calls_without_a_live_token_get_401(rig: Rig, clock: MockClock) -> None:
    url = rig.endpoints.gmail_api_url + "/users/me/profile"
    assert (await rig.http.get(url)).status_code == 401
    response = await rig.http.get(url, headers={"authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    headers = bearer(rig)
    assert (await rig.http.get(url, headers=headers)).status_code == 200
    rig.world.expire_access_tokens(EMAIL)
    assert (await rig.http.get(url, headers=headers)).status_code == 401


async def test_an_account_cannot_read_another_mailbox(rig: Rig, clock: MockClock) -> None:
    url = rig.endpoints.gmail_api_url + "/users/someone@else.com/profile"
    response = await rig.http.get(url, headers=bearer(rig))
    assert response.status_code == 403


async def test_refresh_grant_and_invalid_grant(rig: Rig, clock: MockClock) -> None:
    refresh_token = rig.world.issue_refresh_token(EMAIL)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": rig.world.client_id,
        "client_secret": rig.world.client_secret,
    }
    response = await rig.http.post(rig.endpoints.oauth_token_url, data=form)
    assert response.status_code == 200
    assert response.json()["expires_in"] == 3599
    assert response.headers["cache-control"] == "no-store"
    rig.world.revoke(EMAIL)
    response = await rig.http.post(rig.endpoints.oauth_token_url, data=form)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    bad_client = {**form, "client_secret": "wrong"}
    response = await rig.http.post(rig.endpoints.oauth_token_url, data=bad_client)
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


async def test_consent_redirects_with_code_and_state_and_checks_pkce(
    rig: Rig, clock: MockClock
) -> None:
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "client_id": rig.world.client_id,
        "redirect_uri": "http://127.0.0.1:9/cb",
        "response_type": "code",
        "scope": " ".join(sorted(FULL_SCOPES)),
        "state": "st-1",
        "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
        "access_type": "offline",
    }
    response = await rig.http.get(rig.endpoints.oauth_auth_url, params=params)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    returned = parse_qs(location.query)
    assert location.netloc == "127.0.0.1:9" and returned["state"] == ["st-1"]
    form = {
        "grant_type": "authorization_code",
        "code": returned["code"][0],
        "redirect_uri": "http://127.0.0.1:9/cb",
        "client_id": rig.world.client_id,
        "client_secret": rig.world.client_secret,
        "code_verifier": "w" * 50,
    }
    wrong = await rig.http.post(rig.endpoints.oauth_token_url, data=form)
    assert wrong.json()["error"] == "invalid_grant"
    # The failed attempt used the code up, as Google does.
    response = await rig.http.get(rig.endpoints.oauth_auth_url, params=params)
    form["code"] = parse_qs(urlsplit(response.headers["location"]).query)["code"][0]
    form["code_verifier"] = verifier
    granted = (await rig.http.post(rig.endpoints.oauth_token_url, data=form)).json()
    assert set(granted) >= {"access_token", "refresh_token", "expires_in"}
    again = await rig.http.post(rig.endpoints.oauth_token_url, data=form)
    assert again.json()["error"] == "invalid_grant"


async def test_injected_errors_carry_retry_after_and_the_fakes_date(
    rig: Rig, clock: MockClock
) -> None:
    when = format_datetime(virtual_now() + timedelta(seconds=5), usegmt=True)
    rig.world.faults("gmail", EMAIL).add(
        Fault.error(429, retry_after="7"), Fault.error(503, retry_after=when)
    )
    url = rig.endpoints.gmail_api_url + "/users/me/profile"
    headers = bearer(rig)
    first = await rig.http.get(url, headers=headers)
    second = await rig.http.get(url, headers=headers)
    assert (first.status_code, first.headers["retry-after"]) == (429, "7")
    assert (second.status_code, second.headers["retry-after"]) == (503, when)
    assert second.headers["date"] == format_datetime(virtual_now(), usegmt=True)
    assert [r.note for r in rig.world.requests("gmail.users.getProfile")] == ["fault", "fault"]


async def test_a_dropped_connection_breaks_mid_response(rig: Rig, clock: MockClock) -> None:
    rig.world.faults("calendar", EMAIL).add(Fault.dropped())
    with pytest.raises(httpx.RemoteProtocolError):
        await rig.http.get(
            rig.endpoints.calendar_api_url + "/calendars/primary/events", headers=bearer(rig)
        )
    record = rig.world.requests("calendar.events.list")[0]
    assert (record.status, record.note) == (0, "dropped")


async def test_a_slow_answer_is_abandoned_when_the_client_gives_up(
    rig: Rig, clock: MockClock
) -> None:
    rig.world.faults("gmail", EMAIL).add(Fault.slow(READ_TIMEOUT_S * 3))
    with pytest.raises(httpx.ReadTimeout):
        await rig.http.get(rig.endpoints.gmail_api_url + "/users/me/profile", headers=bearer(rig))
    assert trio.current_time() == READ_TIMEOUT_S
    await trio.testing.wait_all_tasks_blocked()
    record = rig.world.requests("gmail.users.getProfile")[0]
    assert (record.at, record.status, record.note) == (0.0, 0, "client-gone")


async def test_sync_token_refuses_the_parameters_google_refuses(rig: Rig, clock: MockClock) -> None:
    url = rig.endpoints.calendar_api_url + "/calendars/primary/events"
    headers = bearer(rig)
    token = (await rig.http.get(url, headers=headers)).json()["nextSyncToken"]
    response = await rig.http.get(
        url, headers=headers, params={"syncToken": token, "timeMin": "2025-01-01T00:00:00Z"}
    )
    assert response.status_code == 400
    rig.world.invalidate_sync_tokens(EMAIL)
    response = await rig.http.get(url, headers=headers, params={"syncToken": token})
    assert response.status_code == 410
    assert response.json()["error"]["errors"][0]["reason"] == "fullSyncRequired"


async def test_a_guest_may_only_answer_for_itself(rig: Rig, clock: MockClock) -> None:
    start = virtual_now() + timedelta(hours=1)
    event_id = rig.world.add_event(
        EMAIL,
        summary="Review",
        start=start,
        end=start + timedelta(hours=1),
        organizer="boss@corp.com",
        attendees=["eve@corp.com"],
    )
    url = rig.endpoints.calendar_api_url + f"/calendars/primary/events/{event_id}"
    headers = bearer(rig)
    attendees = rig.world.event(EMAIL, event_id)["attendees"]
    only_me = [a for a in attendees if a.get("self")]
    response = await rig.http.patch(url, headers=headers, json={"attendees": only_me})
    assert response.status_code == 403
    for_eve = [
        {**a, "responseStatus": "declined"} if a["email"] == "eve@corp.com" else a
        for a in attendees
    ]
    response = await rig.http.patch(url, headers=headers, json={"attendees": for_eve})
    assert response.status_code == 403
    response = await rig.http.patch(url, headers=headers, json={"summary": "mine now"})
    assert response.status_code == 403
    assert rig.world.calls[("calendar.events.patch", event_id)] == 0


async def test_unknown_paths_and_methods(rig: Rig, clock: MockClock) -> None:
    base = rig.endpoints.base_url
    assert (await rig.http.get(base + "/gmail/v1/users/me/drafts")).status_code == 404
    assert (await rig.http.delete(base + "/token")).status_code == 405


async def test_history_pages_survive_changes_between_pages(rig: Rig, clock: MockClock) -> None:
    for n in range(5):
        rig.world.add_message(EMAIL, sender="a@x.com", subject=str(n))
    start = str(rig.world.account(EMAIL).history_id - 5)
    url = rig.endpoints.gmail_api_url + "/users/me/history"
    headers = bearer(rig)
    seen: list[str] = []
    params = {"startHistoryId": start, "historyTypes": "messageAdded", "maxResults": "2"}
    page = (await rig.http.get(url, headers=headers, params=params)).json()
    while True:
        seen += [m["message"]["id"] for h in page.get("history", []) for m in h["messagesAdded"]]
        if "nextPageToken" not in page:
            break
        rig.world.add_message(EMAIL, sender="a@x.com", subject="late")  # arrives mid-listing
        page = (
            await rig.http.get(
                url, headers=headers, params={**params, "pageToken": page["nextPageToken"]}
            )
        ).json()
    assert seen[:5] == sorted(rig.world.account(EMAIL).messages)[:5]
    assert len(seen) == len(set(seen))
