"""Connected Google accounts, their encrypted tokens and their connector cursors.

Tokens reach this module already sealed by ``skytwin.connectors.oauth``
(AES-GCM, each ciphertext bound to its row and column); nothing here ever sees
them in plain text except ``PgTokenRepository``, which seals and opens them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ..connectors.errors import NeedsReauthorization
from ..connectors.oauth import SealedTokens, StoredTokens, open_tokens, seal_tokens
from ..crypto import TokenCipher
from .pool import Connection, Pool

CONNECTORS = ("gmail", "calendar")


@dataclass(frozen=True, slots=True)
class Account:
    """One connected Google account of one user."""

    connection_id: int
    user_id: int
    account_email: str
    status: str


@dataclass(frozen=True, slots=True)
class CursorState:
    """Where a connector stands for one account, for status pages."""

    connector: str
    cursor: str | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


async def upsert_connection(
    conn: Connection,
    cipher: TokenCipher,
    user_id: int,
    account_email: str,
    tokens: StoredTokens,
    *,
    scopes: str = "",
) -> int:
    """Connect (or reconnect) ``account_email`` for ``user_id`` with fresh tokens."""
    cur = await conn.execute(
        """
        insert into oauth_connections (user_id, provider, account_email, scopes)
        values (%s, 'google', %s, %s)
        on conflict (user_id, provider, account_email)
        do update set scopes = excluded.scopes, updated_at = now()
        returning id
        """,
        (user_id, account_email.strip().lower(), scopes),
    )
    row = await cur.fetchone()
    assert row is not None
    connection_id: int = row["id"]
    await save_tokens(conn, cipher, connection_id, tokens)
    return connection_id


async def save_tokens(
    conn: Connection, cipher: TokenCipher, connection_id: int, tokens: StoredTokens
) -> None:
    """Store sealed tokens and mark the connection active again."""
    sealed = seal_tokens(cipher, connection_id, tokens)
    await conn.execute(
        """
        update oauth_connections
        set refresh_token_enc = %s, access_token_enc = %s, access_expires_at = %s,
            status = 'active', status_reason = null, updated_at = now()
        where id = %s
        """,
        (
            sealed.refresh_token_enc,
            sealed.access_token_enc,
            sealed.access_expires_at,
            connection_id,
        ),
    )


async def active_accounts(conn: Connection) -> list[Account]:
    """Every account SkyTwin should poll now."""
    cur = await conn.execute(
        """
        select c.id as connection_id, c.user_id, c.account_email, c.status
        from oauth_connections c join users u on u.id = c.user_id
        where c.status = 'active' and u.deleted_at is null
        order by c.id
        """
    )
    return [Account(**row) for row in await cur.fetchall()]


async def user_accounts(conn: Connection, user_id: int) -> list[Account]:
    """The user's connected accounts, whatever their status."""
    cur = await conn.execute(
        """
        select id as connection_id, user_id, account_email, status
        from oauth_connections where user_id = %s order by id
        """,
        (user_id,),
    )
    return [Account(**row) for row in await cur.fetchall()]


async def get_cursors(conn: Connection, connection_id: int) -> dict[str, str | None]:
    """The stored cursor of each connector of one account (None: never synced)."""
    cur = await conn.execute(
        "select connector, cursor from connector_cursors where connection_id = %s",
        (connection_id,),
    )
    found = {row["connector"]: row["cursor"] for row in await cur.fetchall()}
    return {name: found.get(name) for name in CONNECTORS}


async def save_cursor(
    conn: Connection, connection_id: int, connector: str, cursor: str, *, now: datetime
) -> None:
    """Advance a connector's cursor (call in the transaction that stores its signals)."""
    await conn.execute(
        """
        insert into connector_cursors
            (connection_id, connector, cursor, last_success_at, updated_at)
        values (%(id)s, %(connector)s, %(cursor)s, %(now)s, %(now)s)
        on conflict (connection_id, connector) do update
        set cursor = excluded.cursor, last_success_at = excluded.last_success_at,
            last_error = null, updated_at = excluded.updated_at
        """,
        {"id": connection_id, "connector": connector, "cursor": cursor, "now": now},
    )


async def save_cursors(
    conn: Connection, connection_id: int, cursors: Mapping[str, str], *, now: datetime
) -> None:
    """Advance several connectors' cursors in one statement (``save_cursor`` for each at once)."""
    await conn.execute(
        """
        insert into connector_cursors
            (connection_id, connector, cursor, last_success_at, updated_at)
        select %(id)s, c.connector, c.cursor, %(now)s, %(now)s
        from unnest(%(connectors)s::text[], %(cursors)s::text[]) as c(connector, cursor)
        on conflict (connection_id, connector) do update
        set cursor = excluded.cursor, last_success_at = excluded.last_success_at,
            last_error = null, updated_at = excluded.updated_at
        """,
        {"id": connection_id, "connectors": list(cursors), "cursors": list(cursors.values()),
         "now": now},
    )


async def record_connector_error(
    conn: Connection, connection_id: int, connector: str, error: str, *, now: datetime
) -> None:
    """Remember the last error of a connector (never a token: callers pass typed summaries)."""
    await conn.execute(
        """
        insert into connector_cursors
            (connection_id, connector, last_error, last_error_at, updated_at)
        values (%(id)s, %(connector)s, %(error)s, %(now)s, %(now)s)
        on conflict (connection_id, connector) do update
        set last_error = excluded.last_error, last_error_at = excluded.last_error_at,
            updated_at = excluded.updated_at
        """,
        {"id": connection_id, "connector": connector, "error": error[:500], "now": now},
    )


async def cursor_states(conn: Connection, connection_id: int) -> list[CursorState]:
    """Each connector's cursor and last success/error for one account."""
    cur = await conn.execute(
        """
        select connector, cursor, last_success_at, last_error, last_error_at
        from connector_cursors where connection_id = %s order by connector
        """,
        (connection_id,),
    )
    return [CursorState(**row) for row in await cur.fetchall()]


class PgTokenRepository:
    """``TokenRepository`` on PostgreSQL: tokens sealed with ``cipher`` in oauth_connections."""

    def __init__(self, pool: Pool, cipher: TokenCipher) -> None:
        self.pool = pool
        self.cipher = cipher

    async def load(self, connection_id: int) -> StoredTokens:
        """The connection's tokens; NeedsReauthorization if marked, LookupError if unknown."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                """
                select refresh_token_enc, access_token_enc, access_expires_at, status, status_reason
                from oauth_connections where id = %s
                """,
                (connection_id,),
            )
            row = await cur.fetchone()
        if row is None:
            raise LookupError(f"no OAuth connection {connection_id}")
        if row["status"] == "needs_reauth":
            raise NeedsReauthorization(
                connection_id, row["status_reason"] or "needs re-authorization"
            )
        sealed = SealedTokens(
            row["refresh_token_enc"], row["access_token_enc"], row["access_expires_at"]
        )
        return open_tokens(self.cipher, connection_id, sealed)

    async def save(self, connection_id: int, tokens: StoredTokens) -> None:
        """Replace the connection's tokens and clear any re-authorization mark."""
        async with self.pool.connection() as conn:
            await save_tokens(conn, self.cipher, connection_id, tokens)

    async def mark_needs_reauth(self, connection_id: int, reason: str) -> None:
        """Record that the user must authorize the connection again."""
        async with self.pool.connection() as conn:
            await conn.execute(
                """
                update oauth_connections
                set status = 'needs_reauth', status_reason = %s, updated_at = %s
                where id = %s
                """,
                (reason[:500], datetime.now(UTC), connection_id),
            )
