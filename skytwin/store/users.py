"""Users and their API tokens.

An API token is shown once, when it is issued; the database keeps only its
SHA-256. Tokens are 32 random bytes, so a plain hash is enough (no password
stretching needed) and lookup by hash is a unique index probe.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from psycopg import errors as pg_errors

from .errors import StoreError
from .pool import Connection

TOKEN_PREFIX = "st_"


class UserExists(StoreError):
    """A user with that email already exists."""


class UnknownUser(StoreError):
    """No user has that email or id."""


@dataclass(frozen=True, slots=True)
class User:
    """A person SkyTwin works for."""

    id: int
    email: str
    name: str
    created_at: datetime


def new_token() -> str:
    """A fresh API token (shown once, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """The at-rest form of an API token."""
    return hashlib.sha256(token.encode()).digest()


def normalize_email(email: str) -> str:
    """Emails are compared case-insensitively; store them lower-cased."""
    return email.strip().lower()


async def create_user(conn: Connection, email: str, name: str) -> User:
    """Insert a user; raise UserExists if the email is taken."""
    try:
        cur = await conn.execute(
            """
            insert into users (email, name) values (%(email)s, %(name)s)
            returning id, email, name, created_at
            """,
            {"email": normalize_email(email), "name": name.strip()},
        )
    except pg_errors.UniqueViolation:
        raise UserExists(f"a user with email {normalize_email(email)} already exists") from None
    row = await cur.fetchone()
    assert row is not None
    return User(**row)


async def get_user_by_email(conn: Connection, email: str) -> User:
    """The user with ``email``; raise UnknownUser otherwise."""
    cur = await conn.execute(
        "select id, email, name, created_at from users where email = %(email)s "
        "and deleted_at is null",
        {"email": normalize_email(email)},
    )
    row = await cur.fetchone()
    if row is None:
        raise UnknownUser(f"no user with email {normalize_email(email)}")
    return User(**row)


async def list_users(conn: Connection) -> list[User]:
    """All users, oldest first."""
    cur = await conn.execute(
        "select id, email, name, created_at from users where deleted_at is null order by id"
    )
    return [User(**row) for row in await cur.fetchall()]


async def issue_token(
    conn: Connection, user_id: int, *, label: str = "", is_admin: bool = False
) -> str:
    """Create an API token for ``user_id``; return it (the only time it is seen)."""
    token = new_token()
    await conn.execute(
        """
        insert into api_tokens (user_id, token_hash, label, is_admin)
        values (%(user_id)s, %(hash)s, %(label)s, %(is_admin)s)
        """,
        {"user_id": user_id, "hash": hash_token(token), "label": label, "is_admin": is_admin},
    )
    return token


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for, as established by its bearer token."""

    user_id: int
    email: str
    is_admin: bool


async def principal_for_token(conn: Connection, token: str) -> Principal | None:
    """The user behind ``token``, or None for an unknown or revoked token."""
    digest = hash_token(token)
    cur = await conn.execute(
        """
        select t.token_hash, t.is_admin, u.id as user_id, u.email
        from api_tokens t join users u on u.id = t.user_id
        where t.token_hash = %(hash)s and t.revoked_at is null and u.deleted_at is null
        """,
        {"hash": digest},
    )
    row = await cur.fetchone()
    # The index lookup already matched; the constant-time compare keeps the
    # final decision free of early-exit timing on the token bytes.
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
        return None
    return Principal(user_id=row["user_id"], email=row["email"], is_admin=row["is_admin"])
