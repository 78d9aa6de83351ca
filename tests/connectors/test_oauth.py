"""OAuth: PKCE, consent, code exchange, and the per-connection access-token manager."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import trio
from trio.testing import MockClock

from skytwin.connectors.api import call_api
from skytwin.connectors.errors import NeedsReauthorization, PermanentApiError
from skytwin.connectors.oauth import (
    CALENDAR_EVENTS_SCOPE,
    GMAIL_MODIFY_SCOPE,
    AccessTokenManager,
    InMemoryTokenRepository,
    OAuthClient,
    StoredTokens,
    authorization_url,
    code_challenge,
    new_code_verifier,
    new_state,
)
from skytwin.fakegoogle import Fault
from tests.fakegoogle.harness import CONNECTION_ID, EMAIL, Rig, virtual_now

PROFILE = "/users/me/profile"


def token_requests(rig: Rig) -> list[float]:
    """When the token endpoint was asked, in virtual seconds."""
    return [r.at for r in rig.world.requests("oauth.token")]


async def profile(rig: Rig, manager: AccessTokenManager | None = None) -> dict[str, object]:
    """One Gmail API call through the connector plumbing."""
    tokens = manager or rig.tokens()
    return await call_api(rig.gmail(), tokens, "GET", PROFILE, operation="gmail.users.getProfile")


# ---- PKCE and the consent URL ----


def test_pkce_s256_matches_rfc_7636() -> None:
    # The example of RFC 7636, appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    fresh = new_code_verifier()
    assert 43 <= len(fresh) <= 128 and fresh != new_code_verifier()
    assert new_state() != new_state()


def test_the_authorization_url_asks_for_offline_consent_with_pkce() -> None:
    url = authorization_url(
        client_id="cid",
        redirect_uri="http://127.0.0.1:8080/oauth/callback",
        state="s1",
        code_challenge="abc",
        login_hint="ada@example.com",
    )
    parts = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://accounts.google.com/o/oauth2/v2/auth"
    )
    assert params["scope"].split() == [GMAIL_MODIFY_SCOPE, CALENDAR_EVENTS_SCOPE]
    assert params["access_type"] == "offline" and params["prompt"] == "consent"
    assert (params["state"], params["code_challenge"], params["code_challenge_method"]) == (
        "s1",
        "abc",
        "S256",
    )
    assert params["response_type"] == "code" and params["login_hint"] == "ada@example.com"


async def test_consent_code_exchange_and_refresh_end_to_end(rig: Rig, clock: MockClock) -> None:
    verifier, state = new_code_verifier(), new_state()
    redirect_uri = "http://127.0.0.1:8080/oauth/callback"
    url = authorization_url(
        client_id=rig.world.client_id,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=code_challenge(verifier),
        auth_url=rig.endpoints.oauth_auth_url,
        login_hint=EMAIL,
    )
    response = await rig.http.get(url)
    assert response.status_code == 302
    returned = parse_qs(urlsplit(response.headers["location"]).query)
    assert returned["state"] == [state]
    grant = await rig.oauth.exchange_code(
        code=returned["code"][0], code_verifier=verifier, redirect_uri=redirect_uri
    )
    assert grant.refresh_token is not None and grant.expires_in_s == 3599
    assert GMAIL_MODIFY_SCOPE in grant.scope.split()
    assert "ya29" not in repr(grant) and "1//" not in repr(grant)
    refreshed = await rig.oauth.refresh(grant.refresh_token)
    assert refreshed.access_token != grant.access_token


async def test_a_reused_code_is_a_needs_reauthorization(rig: Rig, clock: MockClock) -> None:
    with pytest.raises(NeedsReauthorization, match="invalid_grant"):
        await rig.oauth.exchange_code(code="4/bogus", code_verifier="x" * 43, redirect_uri="x")


async def test_a_wrong_client_secret_is_permanent_not_reauth(rig: Rig, clock: MockClock) -> None:
    oauth = OAuthClient(rig.http, rig.world.client_id, "wrong", token_url=rig.oauth.token_url)
    with pytest.raises(PermanentApiError) as caught:
        await oauth.refresh(rig.world.issue_refresh_token(EMAIL))
    assert (caught.value.status, caught.value.reason) == (401, "invalid_client")
    assert "wrong" not in repr(oauth)


# ---- the access-token manager ----


async def test_a_fresh_token_is_reused_until_60_s_before_expiry(rig: Rig, clock: MockClock) -> None:
    manager = rig.tokens()
    first = await manager.access_token()
    for _ in range(5):
        await profile(rig)
    assert await manager.access_token() == first
    # Google grants 3599 s; the manager renews once fewer than 60 s are left.
    await trio.sleep(3599 - 60 - 0.001)
    assert await manager.access_token() == first
    await trio.sleep(0.001)
    second = await manager.access_token()
    assert second != first
    assert token_requests(rig) == [0.0, 3539.0]


async def test_twenty_concurrent_callers_share_one_refresh(rig: Rig, clock: MockClock) -> None:
    rig.world.faults("oauth", EMAIL).add(Fault.slow(0.5))  # keep the refresh in flight a while
    manager = rig.tokens()
    seen: list[str] = []

    async def caller() -> None:
        seen.append(await manager.access_token())

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(caller)
    assert len(seen) == 20 and len(set(seen)) == 1
    assert token_requests(rig) == [0.0]


async def test_a_401_forces_exactly_one_refresh_and_one_retry(rig: Rig, clock: MockClock) -> None:
    await profile(rig)
    rig.world.expire_access_tokens(EMAIL)
    assert (await profile(rig))["emailAddress"] == EMAIL
    statuses = [r.status for r in rig.world.requests("gmail.users.getProfile")]
    assert statuses == [200, 401, 200]
    assert token_requests(rig) == [0.0, 0.0]


async def test_concurrent_401s_still_make_one_refresh(rig: Rig, clock: MockClock) -> None:
    await profile(rig)
    rig.world.expire_access_tokens(EMAIL)
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(profile, rig)
    assert len(token_requests(rig)) == 2
    statuses = [r.status for r in rig.world.requests("gmail.users.getProfile")]
    assert statuses.count(200) == 11 and statuses.count(401) == 10


async def test_a_401_that_survives_the_refresh_is_an_error(rig: Rig, clock: MockClock) -> None:
    rig.world.faults("gmail", EMAIL).add(Fault.error(401), Fault.error(401))
    with pytest.raises(PermanentApiError) as caught:
        await profile(rig)
    assert caught.value.status == 401
    assert len(token_requests(rig)) == 2  # the first token, and exactly one forced refresh
    assert len(rig.world.requests("gmail.users.getProfile")) == 2


async def test_invalid_grant_marks_the_connection_and_is_never_retried(
    rig: Rig, clock: MockClock
) -> None:
    await profile(rig)
    rig.world.revoke(EMAIL)
    with pytest.raises(NeedsReauthorization) as caught:
        await profile(rig)
    assert caught.value.connection_id == CONNECTION_ID
    assert rig.repository.needs_reauth[CONNECTION_ID].startswith("invalid_grant")
    assert rig.tokens().needs_reauthorization
    # Asked again, the manager answers from memory: no further token request, no API call.
    with pytest.raises(NeedsReauthorization):
        await profile(rig)
    assert [r.status for r in rig.world.requests("oauth.token")] == [200, 400]
    assert [r.status for r in rig.world.requests("gmail.users.getProfile")] == [200, 401]
    # A restarted process learns it from the repository, again without asking Google.
    fresh = AccessTokenManager(
        CONNECTION_ID, oauth=rig.oauth, repository=rig.repository, now=virtual_now
    )
    with pytest.raises(NeedsReauthorization):
        await fresh.access_token()
    assert len(token_requests(rig)) == 2


async def test_an_injected_invalid_grant_counts_the_same(rig: Rig, clock: MockClock) -> None:
    rig.world.faults("oauth", EMAIL).add(Fault.invalid_grant())
    with pytest.raises(NeedsReauthorization):
        await rig.tokens().access_token()
    assert CONNECTION_ID in rig.repository.needs_reauth


async def test_a_transient_token_endpoint_failure_is_retried(rig: Rig, clock: MockClock) -> None:
    rig.world.faults("oauth", EMAIL).add(Fault.error(503, retry_after="2"), Fault.error(500))
    await rig.tokens().access_token()
    # Retry-After says 2 s; then the policy's backoff for a second retry: 2 s.
    assert token_requests(rig) == [0.0, 2.0, 4.0]


async def test_a_restarted_manager_reuses_the_stored_token(rig: Rig, clock: MockClock) -> None:
    token = await rig.tokens().access_token()
    await trio.sleep(600)
    again = AccessTokenManager(
        CONNECTION_ID, oauth=rig.oauth, repository=rig.repository, now=virtual_now
    )
    assert await again.access_token() == token
    assert token_requests(rig) == [0.0]
    stored = await rig.repository.load(CONNECTION_ID)
    assert stored.access_token == token


async def test_a_rotated_refresh_token_is_persisted(clock: MockClock) -> None:
    from tests.fakegoogle.harness import new_world, rig_for

    world = new_world(rotate_refresh_tokens=True)
    async with rig_for(world) as rig:
        rig.connect()
        original = (await rig.repository.load(CONNECTION_ID)).refresh_token
        await rig.tokens().access_token()
        stored = await rig.repository.load(CONNECTION_ID)
        assert stored.refresh_token not in (None, original)
        assert original not in world.refresh_tokens


class GatedRepository(InMemoryTokenRepository):
    """A repository whose saves wait for a gate (a database that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()

    async def save(self, connection_id: int, tokens: StoredTokens) -> None:
        await self.gate.wait()
        await super().save(connection_id, tokens)


async def test_a_save_cancelled_by_a_deadline_is_finished_later(rig: Rig, clock: MockClock) -> None:
    repository = GatedRepository()
    repository.put(CONNECTION_ID, await rig.repository.load(CONNECTION_ID))
    manager = AccessTokenManager(
        CONNECTION_ID, oauth=rig.oauth, repository=repository, now=virtual_now
    )
    with trio.move_on_after(5) as scope:
        await manager.access_token()
    assert scope.cancelled_caught and repository.saves == 0
    repository.gate.set()
    token = await manager.access_token()
    assert repository.saves == 1
    assert (await repository.load(CONNECTION_ID)).access_token == token
    assert len(token_requests(rig)) == 1  # the refreshed token was kept, not thrown away
