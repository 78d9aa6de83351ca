"""Connecting a Google account: the OAuth code flow and the headless refresh-token path."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..connectors.api import call_api
from ..connectors.oauth import (
    SCOPES,
    OAuthClient,
    StoredTokens,
    TokenGrant,
    authorization_url,
    code_challenge,
    new_code_verifier,
    new_state,
)
from ..crypto import TokenCipher
from ..store import Pool, transaction
from ..store.connections import upsert_connection
from ..store.pool import Connection
from .google import Google

STATE_TTL = timedelta(minutes=10)


class ConnectError(Exception):
    """Connecting the account failed; the message says why (never with a token in it)."""


def _state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def _verifier_context(state_hash: bytes) -> str:
    return f"oauth_states:{state_hash.hex()}:code_verifier"


async def start_authorization(
    pool: Pool,
    cipher: TokenCipher,
    google: Google,
    *,
    user_id: int,
    redirect_uri: str,
    auth_url: str,
    client_id: str,
    login_hint: str | None = None,
) -> str:
    """Record a single-use, expiring state bound to ``user_id``; return the consent URL."""
    state = new_state()
    verifier = new_code_verifier()
    digest = _state_hash(state)
    async with pool.connection() as conn:
        await conn.execute(
            """
            insert into oauth_states
                (state_hash, user_id, code_verifier_enc, redirect_uri, expires_at)
            values (%s, %s, %s, %s, %s)
            """,
            (
                digest,
                user_id,
                cipher.encrypt(verifier, context=_verifier_context(digest)),
                redirect_uri,
                datetime.now(UTC) + STATE_TTL,
            ),
        )
    return authorization_url(
        client_id=client_id,
        redirect_uri=redirect_uri,
        state=state,
        code_challenge=code_challenge(verifier),
        auth_url=auth_url,
        login_hint=login_hint,
    )


@dataclass(frozen=True, slots=True)
class Connected:
    """A freshly connected account."""

    connection_id: int
    user_id: int
    account_email: str


async def finish_authorization(
    pool: Pool, cipher: TokenCipher, google: Google, *, state: str, code: str
) -> Connected:
    """Consume the state (once, unexpired), exchange the code, store the tokens."""
    digest = _state_hash(state)

    async def consume(conn: Connection) -> tuple[int, str, str] | None:
        cur = await conn.execute(
            """
            update oauth_states set used_at = now()
            where state_hash = %s and used_at is null and expires_at > now()
            returning user_id, code_verifier_enc, redirect_uri
            """,
            (digest,),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        return row["user_id"], row["code_verifier_enc"], row["redirect_uri"]

    consumed = await transaction(pool, consume)
    if consumed is None:
        raise ConnectError("this sign-in link is unknown, used already or expired: start again")
    user_id, verifier_enc, redirect_uri = consumed
    verifier = cipher.decrypt(verifier_enc, context=_verifier_context(digest))
    grant = await google.oauth.exchange_code(
        code=code, code_verifier=verifier, redirect_uri=redirect_uri
    )
    if not grant.refresh_token:
        raise ConnectError("Google granted no refresh token; remove SkyTwin's access and retry")
    return await store_grant(pool, cipher, google, user_id, grant)


async def connect_with_refresh_token(
    pool: Pool,
    cipher: TokenCipher,
    google: Google,
    *,
    user_id: int,
    refresh_token: str,
    verify: bool = True,
    account_email: str | None = None,
) -> Connected:
    """The headless path: check the refresh token with Google (unless told not to), store it."""
    if not verify:
        if account_email is None:
            raise ConnectError("an account email is needed when the token is not verified")
        async with pool.connection() as conn:
            connection_id = await upsert_connection(
                conn, cipher, user_id, account_email, StoredTokens(refresh_token)
            )
        return Connected(connection_id, user_id, account_email.lower())
    grant = await google.oauth.refresh(refresh_token)
    grant = TokenGrant(grant.access_token, grant.expires_in_s, refresh_token, grant.scope)
    connected = await store_grant(pool, cipher, google, user_id, grant)
    if account_email is not None and connected.account_email != account_email.lower():
        raise ConnectError(
            f"the refresh token belongs to {connected.account_email}, not {account_email}"
        )
    return connected


class _StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    async def access_token(self) -> str:
        return self.token

    async def force_refresh(self, rejected: str) -> str:
        raise ConnectError("Google refused a token it had just granted")


async def store_grant(
    pool: Pool, cipher: TokenCipher, google: Google, user_id: int, grant: TokenGrant
) -> Connected:
    """Find the account's email with the new access token, then store the tokens."""
    profile = await call_api(
        google.gmail,
        _StaticToken(grant.access_token),
        "GET",
        "/users/me/profile",
        operation="gmail.users.getProfile",
    )
    email = str(profile.get("emailAddress") or "").lower()
    if not email:
        raise ConnectError("Google did not say which account this is")
    tokens = StoredTokens(
        grant.refresh_token,
        grant.access_token,
        datetime.now(UTC) + timedelta(seconds=grant.expires_in_s),
    )
    async with pool.connection() as conn:
        connection_id = await upsert_connection(
            conn, cipher, user_id, email, tokens, scopes=grant.scope or " ".join(SCOPES)
        )
    google.forget(connection_id)  # drop any cached (revoked) tokens of a reconnect
    return Connected(connection_id, user_id, email)


__all__ = [
    "ConnectError",
    "Connected",
    "OAuthClient",
    "connect_with_refresh_token",
    "finish_authorization",
    "start_authorization",
]
