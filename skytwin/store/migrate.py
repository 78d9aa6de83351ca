"""Numbered ``.sql`` migrations with a ledger table.

Files in ``skytwin/store/migrations`` are named ``NNNN_description.sql`` and
applied in order, each in its own transaction together with its ledger row.
A session-level advisory lock serialises concurrent runners (two processes
starting at once): the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

import psycopg
import structlog
from psycopg import sql

from .errors import MigrationError
from .pool import Pool

log = structlog.get_logger("skytwin.store")

# An arbitrary constant identifying "SkyTwin schema migrations" among advisory locks.
MIGRATION_LOCK_KEY = 0x5C17_7719
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql_text: str


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations in ``directory`` (default: the packaged ones) in version order.

    A malformed file name or a repeated version number is a MigrationError.
    """
    if directory is None:
        directory = resources.files("skytwin.store").joinpath("migrations")
    found = [
        Migration(_version_of(entry.name), entry.name, entry.read_text("utf-8"))
        for entry in directory.iterdir()
        if entry.name.endswith(".sql")
    ]
    return _checked(found)


def _version_of(name: str) -> int:
    match = _NAME.match(name)
    if match is None:
        raise MigrationError(f"migration file name must be NNNN_name.sql: {name}")
    return int(match.group(1))


def _checked(migrations: list[Migration]) -> list[Migration]:
    """``migrations`` in version order, each name well formed and matching its version."""
    for migration in migrations:
        if _version_of(migration.name) != migration.version:
            raise MigrationError(
                f"migration {migration.name} is numbered {migration.version}, not its file name"
            )
    ordered = sorted(migrations, key=lambda m: m.version)
    versions = [m.version for m in ordered]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number: {versions}")
    return ordered


async def apply_migrations(pool: Pool, migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is missing under the advisory lock; return the names applied."""
    migrations = load_migrations() if migrations is None else _checked(migrations)
    applied: list[str] = []
    async with pool.connection() as conn:
        await conn.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(
                """
                create table if not exists schema_migrations (
                    version integer primary key,
                    name text not null,
                    applied_at timestamptz not null default now()
                )
                """
            )
            cur = await conn.execute("select version from schema_migrations")
            done = {row["version"] for row in await cur.fetchall()}
            for migration in migrations:
                if migration.version in done:
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(sql.SQL(migration.sql_text))  # type: ignore[arg-type,unused-ignore]
                        await conn.execute(
                            "insert into schema_migrations (version, name) values (%s, %s)",
                            (migration.version, migration.name),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
                log.info("skytwin.migration_applied", migration=migration.name)
                applied.append(migration.name)
        finally:
            if not conn.closed:
                await conn.execute("select pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied
