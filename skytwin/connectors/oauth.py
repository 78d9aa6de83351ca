"""OAuth 2.0 with Google: PKCE, the consent URL, code exchange, refresh, and per-connection tokens.

`AccessTokenManager` is the one thing the poll loop asks for a bearer token.
It refreshes when the token expires within `refresh_margin_s`, keeps at most
one refresh in flight per connection (callers queue on a `trio.Lock` and
reuse the winner's token), and turns `invalid_grant` into
`NeedsReauthorization`: recorded once through the `TokenRepository`, never
retried. Tokens never appear in a log line, an exception message or a repr.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx
import structlog
import trio

from skytwin.connectors.api import DEFAULT_POLICY, send_once
from skytwin.connectors.errors import NeedsReauthorization, PermanentApiError
from skytwin.crypto import TokenCipher
from skytwin.nursery import RetryBudget, RetryPolicy, retry_call

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GMAIL_MODIFY_SCOPE = "https://www.googleapis.com/auth/gmail.modify"
CALENDAR_EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
SCOPES = (GMAIL_MODIFY_SCOPE, CALENDAR_EVENTS_SCOPE)
REFRESH_MARGIN_S = 60.0

log = structlog.get_logger("skytwin.connectors.oauth")


def utc_now() -> datetime:
    """The wall clock in UTC (token expiry is stored as a wall-clock time)."""
    return datetime.now(UTC)


# ---- PKCE and the consent URL ----


def new_code_verifier() -> str:
    """A PKCE code verifier: 86 URL-safe characters (RFC 7636 allows 43-128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """The S256 PKCE challenge for `verifier`."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_state() -> str:
    """An unguessable OAuth `state` value."""
    return secrets.token_urlsafe(32)


def authorization_url(
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    auth_url: str = GOOGLE_AUTH_URL,
    scopes: Sequence[str] = SCOPES,
    login_hint: str | None = None,
) -> str:
    """The consent URL: offline access (a refresh token), forced consent, PKCE S256."""
    params = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": " ".join(scopes),
        "access_type": "offline",
        # Without prompt=consent Google sends no refresh token on a repeat consent.
        "prompt": "consent",
        "include_granted_scopes": "true",
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if login_hint:
        params["login_hint"] = login_hint
    return f"{auth_url}?{urlencode(params)}"


# ---- the token endpoint ----


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What the token endpoint granted."""

    access_token: str = field(repr=False)
    expires_in_s: float
    refresh_token: str | None = field(default=None, repr=False)
    scope: str = ""


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """SkyTwin as an OAuth client of Google: credentials, token URL, retry policy and budget."""

    http: httpx.AsyncClient
    client_id: str
    client_secret: str = field(repr=False)
    token_url: str = GOOGLE_TOKEN_URL
    policy: RetryPolicy = DEFAULT_POLICY
    budget: RetryBudget | None = None

    async def exchange_code(
        self, *, code: str, code_verifier: str, redirect_uri: str
    ) -> TokenGrant:
        """Trade an authorization code (plus its PKCE verifier) for tokens."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": code_verifier,
            "redirect_uri": redirect_uri,
        }
        return await self._token_request(form, "oauth.exchange_code")

    async def refresh(self, refresh_token: str) -> TokenGrant:
        """A new access token for `refresh_token`; NeedsReauthorization on invalid_grant."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self._token_request(form, "oauth.refresh")

    async def _token_request(self, form: dict[str, str], operation: str) -> TokenGrant:
        form = {**form, "client_id": self.client_id, "client_secret": self.client_secret}

        async def attempt() -> dict[str, Any]:
            return await send_once(
                self.http, "POST", self.token_url, operation, bearer=False, data=form
            )

        try:
            body = await retry_call(attempt, policy=self.policy, target="oauth", budget=self.budget)
        except PermanentApiError as exc:
            if exc.reason == "invalid_grant":
                detail = f"invalid_grant: {exc.detail}" if exc.detail else "invalid_grant"
                raise NeedsReauthorization(None, detail) from exc
            raise
        try:
            return TokenGrant(
                access_token=str(body["access_token"]),
                expires_in_s=float(body.get("expires_in", 3600)),
                refresh_token=body.get("refresh_token"),
                scope=str(body.get("scope", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PermanentApiError(200, "malformed_token_response") from exc


# ---- persistence ----


@dataclass(frozen=True, slots=True)
class StoredTokens:
    """A connection's tokens in plain text (only ever in memory); expiry on the wall clock."""

    refresh_token: str | None = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    access_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SealedTokens:
    """A connection's tokens as stored: encrypted, each bound to its connection and column."""

    refresh_token_enc: str | None
    access_token_enc: str | None
    access_expires_at: datetime | None


def token_context(connection_id: int, column: str) -> str:
    """The associated data binding a ciphertext to one row and column."""
    return f"oauth_connections:{connection_id}:{column}"


def seal_tokens(cipher: TokenCipher, connection_id: int, tokens: StoredTokens) -> SealedTokens:
    """Encrypt a connection's tokens for storage (columns *_enc of oauth_connections)."""

    def seal(value: str | None, column: str) -> str | None:
        if value is None:
            return None
        return cipher.encrypt(value, context=token_context(connection_id, column))

    return SealedTokens(
        seal(tokens.refresh_token, "refresh_token"),
        seal(tokens.access_token, "access_token"),
        tokens.access_expires_at,
    )


def open_tokens(cipher: TokenCipher, connection_id: int, sealed: SealedTokens) -> StoredTokens:
    """Decrypt what `seal_tokens` stored for the same connection."""

    def unseal(value: str | None, column: str) -> str | None:
        if value is None:
            return None
        return cipher.decrypt(value, context=token_context(connection_id, column))

    return StoredTokens(
        unseal(sealed.refresh_token_enc, "refresh_token"),
        unseal(sealed.access_token_enc, "access_token"),
        sealed.access_expires_at,
    )


class TokenRepository(Protocol):
    """Where a connection's tokens live (PostgreSQL in production, memory in tests).

    `load` raises `NeedsReauthorization` for a connection marked as needing it
    and `LookupError` for an unknown one; `save` of tokens from a new consent
    clears that mark.
    """

    async def load(self, connection_id: int) -> StoredTokens:
        """The connection's current tokens."""
        ...

    async def save(self, connection_id: int, tokens: StoredTokens) -> None:
        """Replace the connection's tokens."""
        ...

    async def mark_needs_reauth(self, connection_id: int, reason: str) -> None:
        """Record that the user must authorize the connection again."""
        ...


class InMemoryTokenRepository:
    """A `TokenRepository` in a dict, storing sealed tokens as the real one must."""

    def __init__(self, cipher: TokenCipher | None = None) -> None:
        self.cipher = cipher or TokenCipher(secrets.token_bytes(32))
        self.rows: dict[int, SealedTokens] = {}
        self.needs_reauth: dict[int, str] = {}
        self.saves = 0

    def put(self, connection_id: int, tokens: StoredTokens) -> None:
        """Store tokens without the async ceremony (test setup)."""
        self.rows[connection_id] = seal_tokens(self.cipher, connection_id, tokens)
        self.needs_reauth.pop(connection_id, None)

    async def load(self, connection_id: int) -> StoredTokens:
        """The connection's tokens; NeedsReauthorization if marked, KeyError if unknown."""
        await trio.lowlevel.checkpoint()
        if connection_id in self.needs_reauth:
            raise NeedsReauthorization(connection_id, self.needs_reauth[connection_id])
        return open_tokens(self.cipher, connection_id, self.rows[connection_id])

    async def save(self, connection_id: int, tokens: StoredTokens) -> None:
        """Replace the connection's tokens and clear any re-authorization mark."""
        await trio.lowlevel.checkpoint()
        self.put(connection_id, tokens)
        self.saves += 1

    async def mark_needs_reauth(self, connection_id: int, reason: str) -> None:
        """Mark the connection as needing re-authorization."""
        await trio.lowlevel.checkpoint()
        self.needs_reauth[connection_id] = reason


# ---- the per-connection access-token manager ----


class AccessTokenManager:
    """Hands out valid access tokens for one connection; at most one refresh in flight.

    Share one instance between everything that calls Google for the connection
    (its Gmail and Calendar syncs, its action executions). State changes in
    memory before any await that persists them, so a cancelled save is retried
    on the next call instead of being lost.
    """

    def __init__(
        self,
        connection_id: int,
        *,
        oauth: OAuthClient,
        repository: TokenRepository,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.connection_id = connection_id
        self._oauth = oauth
        self._repository = repository
        self._margin_s = refresh_margin_s
        self._now = now
        self._lock = trio.Lock()
        self._tokens: StoredTokens | None = None
        self._expires_at = -math.inf  # trio time
        self._unsaved = False
        self._reauth_reason: str | None = None
        self._reauth_recorded = False

    def __repr__(self) -> str:
        return f"AccessTokenManager(connection_id={self.connection_id})"

    @property
    def needs_reauthorization(self) -> bool:
        """Whether the grant is known to be gone."""
        return self._reauth_reason is not None

    def _fresh_token(self) -> str | None:
        tokens = self._tokens
        if tokens is None or tokens.access_token is None:
            return None
        if trio.current_time() >= self._expires_at - self._margin_s:
            return None
        return tokens.access_token

    async def access_token(self) -> str:
        """A token valid for more than `refresh_margin_s`; refreshes (single-flight) if needed."""
        token = self._fresh_token()
        if token is not None and not self._unsaved and self._reauth_reason is None:
            return token  # the common case: no lock, no I/O
        async with self._lock:
            await self._settle()
            token = self._fresh_token()
            return token if token is not None else await self._refresh()

    async def force_refresh(self, rejected: str) -> str:
        """A token other than `rejected` (which an API just refused with 401)."""
        async with self._lock:
            await self._settle()
            token = self._fresh_token()
            if token is not None and token != rejected:
                return token  # another caller already replaced it while we queued
            return await self._refresh()

    async def _settle(self) -> None:
        """Under the lock: load once, finish unfinished persistence, refuse a dead grant."""
        if self._reauth_reason is not None:
            if not self._reauth_recorded:
                await self._record_reauth()
            raise NeedsReauthorization(self.connection_id, self._reauth_reason)
        if self._tokens is None:
            await self._load()
        if self._unsaved:
            await self._save()

    async def _load(self) -> None:
        try:
            tokens = await self._repository.load(self.connection_id)
        except NeedsReauthorization as exc:
            self._reauth_reason, self._reauth_recorded = exc.reason, True
            raise
        self._tokens = tokens
        if tokens.access_token is not None and tokens.access_expires_at is not None:
            remaining_s = (tokens.access_expires_at - self._now()).total_seconds()
            self._expires_at = trio.current_time() + remaining_s

    async def _save(self) -> None:
        assert self._tokens is not None
        await self._repository.save(self.connection_id, self._tokens)
        self._unsaved = False

    async def _record_reauth(self) -> None:
        assert self._reauth_reason is not None
        log.warning(
            "skytwin.needs_reauthorization",
            connection_id=self.connection_id,
            reason=self._reauth_reason,
        )
        await self._repository.mark_needs_reauth(self.connection_id, self._reauth_reason)
        self._reauth_recorded = True

    async def _refresh(self) -> str:
        assert self._tokens is not None
        refresh_token = self._tokens.refresh_token
        try:
            if refresh_token is None:
                raise NeedsReauthorization(self.connection_id, "no refresh token stored")
            grant = await self._oauth.refresh(refresh_token)
        except NeedsReauthorization as exc:
            self._reauth_reason = exc.reason
            await self._record_reauth()
            raise NeedsReauthorization(self.connection_id, exc.reason) from exc
        self._expires_at = trio.current_time() + grant.expires_in_s
        self._tokens = StoredTokens(
            # Google may rotate the refresh token; keep the old one when it does not.
            refresh_token=grant.refresh_token or refresh_token,
            access_token=grant.access_token,
            access_expires_at=self._now() + timedelta(seconds=grant.expires_in_s),
        )
        self._unsaved = True
        log.info(
            "skytwin.token_refreshed",
            connection_id=self.connection_id,
            expires_in_s=grant.expires_in_s,
            rotated=grant.refresh_token is not None and grant.refresh_token != refresh_token,
        )
        await self._save()
        return grant.access_token
