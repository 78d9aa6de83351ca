"""Connector cursors: saving several in one statement does what saving each does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from skytwin.connectors.oauth import StoredTokens
from skytwin.crypto import TokenCipher
from skytwin.store import Pool, users
from skytwin.store.connections import (
    cursor_states,
    record_connector_error,
    save_cursor,
    save_cursors,
    upsert_connection,
)
from skytwin.store.transaction import one_statement

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


async def connected(pool: Pool, email: str) -> int:
    async with pool.connection() as conn:
        user = await users.create_user(conn, email, "Ann")
        return await upsert_connection(
            conn, TokenCipher(b"k" * 32), user.id, email, StoredTokens("refresh")
        )


async def test_save_cursors_inserts_then_advances_and_clears_the_error(pool: Pool) -> None:
    one, other = await connected(pool, "ann@example.com"), await connected(pool, "bob@example.com")
    later = NOW + timedelta(minutes=1)

    await one_statement(
        pool, lambda conn: save_cursors(conn, one, {"gmail": "10", "calendar": "s1"}, now=NOW)
    )
    async with pool.connection() as conn:
        await record_connector_error(conn, one, "gmail", "GoogleUnavailable: 503", now=NOW)
        await save_cursors(conn, one, {"gmail": "11", "calendar": "s2"}, now=later)
        # The same steps one cursor at a time, for comparison.
        await save_cursor(conn, other, "gmail", "10", now=NOW)
        await save_cursor(conn, other, "calendar", "s1", now=NOW)
        await record_connector_error(conn, other, "gmail", "GoogleUnavailable: 503", now=NOW)
        await save_cursor(conn, other, "gmail", "11", now=later)
        await save_cursor(conn, other, "calendar", "s2", now=later)
        states = await cursor_states(conn, one)
        expected = await cursor_states(conn, other)

    assert states == expected
    assert [(s.connector, s.cursor, s.last_success_at, s.last_error) for s in states] == [
        ("calendar", "s2", later, None),
        ("gmail", "11", later, None),
    ]
