"""A trio-native psycopg connection.

psycopg's ``AsyncConnection`` waits on its socket through asyncio. Every wait
goes through two hooks: ``wait()`` for queries and the ``PQGenConn`` driver for
connect and cancel. ``TrioConnection`` replaces both with
``trio.lowlevel.wait_readable``/``wait_writable`` and swaps the asyncio lock for
a ``trio.Lock``, so queries run on Trio's own event loop.

What must stay true:

* A cancel scope that fires while a query runs cancels it **on the server**
  (libpq 17's non-blocking cancel, bundled by psycopg-binary) and drains the
  connection back to idle, inside a shielded scope bounded by
  ``CANCEL_CLEANUP_S``. If that bound passes (a frozen server), the connection
  is closed instead, so a caller's deadline is never held hostage.
* This leans on psycopg internals (``wait``, ``lock``, ``_connect_gen``,
  ``_cancel_gen``); psycopg is pinned to its minor version and
  ``tests/store/test_conformance.py`` guards the contract.
"""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
import trio
from psycopg import errors as e
from psycopg import pq
from psycopg.abc import PQGen, PQGenConn
from psycopg.conninfo import conninfo_attempts, conninfo_to_dict, make_conninfo
from psycopg.rows import AsyncRowFactory, Row
from psycopg.waiting import READY_R, READY_RW, READY_W, WAIT_R, WAIT_RW, WAIT_W

from .errors import DatabaseUnavailable

# After a cancelled query: how long the server gets to confirm the cancel and
# hand the connection back before we give up on it and close it.
CANCEL_CLEANUP_S = 0.5
DEFAULT_CONNECT_TIMEOUT_S = 5.0

_ACTIVE = pq.TransactionStatus.ACTIVE


class TrioConnection(psycopg.AsyncConnection[Row]):
    """An ``AsyncConnection`` whose waits run on Trio."""

    def __init__(self, pgconn: pq.abc.PGconn, row_factory: Any = None) -> None:
        if row_factory is None:
            super().__init__(pgconn)
        else:
            super().__init__(pgconn, row_factory)
        # psycopg's asyncio.Lock would need an asyncio loop once contended.
        self.lock = _FastLock()  # type: ignore[assignment]

    @classmethod
    async def connect(  # type: ignore[override,unused-ignore]
        cls,
        conninfo: str = "",
        *,
        autocommit: bool = False,
        prepare_threshold: int | None = 5,
        row_factory: AsyncRowFactory[Any] | None = None,
        **kwargs: Any,
    ) -> TrioConnection[Any]:
        """Connect within the caller's deadline; raise DatabaseUnavailable on failure."""
        params = conninfo_to_dict(conninfo, **kwargs)
        # Host name resolution may block: do it off the event loop.
        DB_WAITS.in_flight += 1
        try:
            attempts = await trio.to_thread.run_sync(conninfo_attempts, params)
        finally:
            DB_WAITS.in_flight -= 1
        errors: list[str] = []
        conn: TrioConnection[Any] | None = None
        for attempt in attempts:
            try:
                conn = await _wait_conn(cls._connect_gen(make_conninfo("", **attempt)))
                break
            except e.Error as exc:
                errors.append(str(exc).strip())
        if conn is None:
            raise DatabaseUnavailable("; ".join(errors) or "no connection attempt possible")
        conn._autocommit = bool(autocommit)
        if row_factory is not None:
            conn.row_factory = row_factory
        conn.prepare_threshold = prepare_threshold
        return conn

    async def wait(  # psycopg's signature; our deadlines come from cancel scopes
        self,
        gen: PQGen[Any],
        interval: float = 0.0,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        """Drive a psycopg generator on Trio; on cancellation cancel the query server-side."""
        fileno = self.pgconn.socket
        try:
            return await _wait(gen, fileno)
        except BaseException:
            if self.pgconn.transaction_status == _ACTIVE and not self.closed:
                await self._cancel_and_drain(gen, fileno)
            raise

    async def _cancel_and_drain(self, gen: PQGen[Any], fileno: int) -> None:
        """Cancel the running query and drain its result; close the connection if that stalls."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CANCEL_CLEANUP_S
            try:
                await _wait_conn(self._cancel_gen())
                await _wait(gen, fileno)
            except e.QueryCanceled:
                pass  # what we asked for
            except BaseException:  # noqa: BLE001 - any failure here means: unknown state
                self.pgconn.finish()
                return
        if scope.cancelled_caught or self.pgconn.transaction_status == _ACTIVE:
            self.pgconn.finish()

    def is_idle_and_healthy(self) -> bool:
        """True when the connection looks usable without a round trip.

        An idle connection has nothing to read. Data (or EOF) waiting on the
        socket means the server said goodbye: a restart, a terminated backend.
        """
        if self.closed or self.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return False
        try:
            readable, _, _ = select.select([self.pgconn.socket], [], [], 0)
        except (OSError, ValueError, psycopg.OperationalError):
            return False
        return not readable


class _FastLock:
    """A ``trio.Lock`` that skips the checkpoint when uncontended.

    Every query takes the connection lock and then waits on the socket, which
    is a checkpoint anyway; ``trio.Lock.acquire`` would add a second scheduler
    round trip to each query.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        """True while some task holds the lock."""
        return self._lock.locked()


# A task that keeps finding answers ready yields after this long anyway.
MAX_BUSY_S = 0.001


class _Busy:
    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since = time.monotonic()


_BUSY = _Busy()


def _busy_too_long() -> bool:
    return time.monotonic() - _BUSY.since > MAX_BUSY_S


class _Waits:
    """How many tasks are waiting on the database server right now."""

    __slots__ = ("in_flight",)

    def __init__(self) -> None:
        self.in_flight = 0


# Read by instrumentation; tests' virtual clocks read it so that they never jump
# while PostgreSQL (real time, another process) is still working on an answer.
DB_WAITS = _Waits()


async def _wait(gen: PQGen[Any], fileno: int) -> Any:
    """Run a query generator to completion, waiting on ``fileno`` with Trio."""
    DB_WAITS.in_flight += 1
    try:
        state = next(gen)
        while True:
            if state == WAIT_R:
                # The answer is often in the socket already; taking it without a
                # trip through the scheduler saves a wake-up per query. Yield at
                # least every MAX_BUSY_S anyway, so other tasks never starve.
                if not _poll(fileno, select.POLLIN) or _busy_too_long():
                    await trio.lowlevel.wait_readable(fileno)
                    _BUSY.since = time.monotonic()
                state = gen.send(READY_R)
            elif state == WAIT_W:
                if not _poll(fileno, select.POLLOUT):
                    await trio.lowlevel.wait_writable(fileno)
                state = gen.send(READY_W)
            elif state == WAIT_RW:
                state = gen.send(await _wait_rw(fileno))
            else:
                raise e.InternalError(f"bad poll status: {state}")
    except StopIteration as ex:
        return ex.value
    finally:
        DB_WAITS.in_flight -= 1


async def _wait_conn(gen: PQGenConn[Any]) -> Any:
    """Run a connect/cancel generator, whose socket may change between steps."""
    DB_WAITS.in_flight += 1
    try:
        fileno, state = next(gen)
        while True:
            if state == WAIT_R:
                await trio.lowlevel.wait_readable(fileno)
                fileno, state = gen.send(READY_R)
            elif state == WAIT_W:
                await trio.lowlevel.wait_writable(fileno)
                fileno, state = gen.send(READY_W)
            elif state == WAIT_RW:
                fileno, state = gen.send(await _wait_rw(fileno))
            else:
                raise e.InternalError(f"bad poll status: {state}")
    except StopIteration as ex:
        return ex.value
    finally:
        DB_WAITS.in_flight -= 1


def _poll(fileno: int, events: int) -> int:
    poller = select.poll()
    poller.register(fileno, events)
    ready = 0
    for _, revents in poller.poll(0):
        ready |= revents
    return ready


async def _wait_rw(fileno: int) -> Any:
    """Wait until ``fileno`` is readable or writable (rare: large sends)."""
    ready = _poll(fileno, select.POLLIN | select.POLLOUT)
    if not ready:
        result: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def wait_for(fn: Any, tag: Any) -> None:
                await fn(fileno)
                result.append(tag)
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait_for, trio.lowlevel.wait_readable, READY_R)
            nursery.start_soon(wait_for, trio.lowlevel.wait_writable, READY_W)
        return READY_RW if len(result) > 1 else result[0]
    if ready & select.POLLIN and ready & select.POLLOUT:
        return READY_RW
    return READY_R if ready & (select.POLLIN | select.POLLERR | select.POLLHUP) else READY_W
