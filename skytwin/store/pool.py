"""A small Trio connection pool for ``TrioConnection``.

psycopg_pool is asyncio-only. This one does what SkyTwin needs: a size limit,
an acquire deadline, broken connections discarded and replaced, and every
connection handed back idle (an open transaction is rolled back, a connection in
an unknown state is closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psycopg
import structlog
import trio
from psycopg import pq
from psycopg.rows import dict_row

from .connection import CANCEL_CLEANUP_S, TrioConnection
from .errors import DatabaseUnavailable, PoolTimeout

log = structlog.get_logger("skytwin.store")

Connection = TrioConnection[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool for metrics and health."""

    max_size: int
    open: int
    idle: int
    in_use: int
    waiting: int


class Pool:
    """At most ``max_size`` connections, handed out one task at a time."""

    def __init__(
        self,
        conninfo: str,
        *,
        max_size: int = 10,
        acquire_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        application_name: str = "skytwin",
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.conninfo = conninfo
        self.max_size = max_size
        self.acquire_timeout_s = acquire_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.application_name = application_name
        self._slots = trio.Semaphore(max_size)
        self._idle: list[Connection] = []
        self._open = 0
        self._waiting = 0
        self._closed = False

    # ---- acquire / release ----

    def connection(self) -> _Lease:
        """Lend a connection for the block; raise PoolTimeout past the acquire deadline."""
        return _Lease(self)

    async def _acquire(self) -> Connection:
        if self._closed:
            raise DatabaseUnavailable("the connection pool is closed")
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            self._waiting += 1
            try:
                with trio.move_on_after(self.acquire_timeout_s) as scope:
                    await self._slots.acquire()
            finally:
                self._waiting -= 1
            if scope.cancelled_caught:
                raise PoolTimeout(
                    f"no database connection free within {self.acquire_timeout_s:g} s "
                    f"(all {self.max_size} in use)"
                ) from None
        try:
            while self._idle:
                conn = self._idle.pop()
                if conn.is_idle_and_healthy():
                    return conn
                self._discard(conn)
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    async def _connect(self) -> Connection:
        try:
            with trio.fail_after(self.connect_timeout_s):
                conn: Connection = await TrioConnection.connect(
                    self.conninfo,
                    autocommit=True,
                    row_factory=dict_row,
                    application_name=self.application_name,
                )
        except trio.TooSlowError:
            raise DatabaseUnavailable(
                f"could not connect to the database within {self.connect_timeout_s:g} s"
            ) from None
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"could not connect to the database: {exc}") from exc
        self._open += 1
        return conn

    async def _release(self, conn: Connection) -> None:
        try:
            if not conn.closed and conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                await self._reset(conn)
            if conn.closed or self._closed:
                self._discard(conn)
            else:
                self._idle.append(conn)
        finally:
            self._slots.release()

    async def _reset(self, conn: Connection) -> None:
        """Roll back what the borrower left open; close the connection if that fails."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CANCEL_CLEANUP_S
            try:
                await conn.rollback()
            except psycopg.Error:
                conn.pgconn.finish()
        if scope.cancelled_caught or conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
            conn.pgconn.finish()

    def _discard(self, conn: Connection) -> None:
        self._open -= 1
        try:
            conn.pgconn.finish()
        except Exception:  # noqa: BLE001 - closing a dead connection must never raise
            pass

    # ---- lifecycle ----

    def stats(self) -> PoolStats:
        """Current pool occupancy."""
        in_use = self.max_size - self._slots.value
        return PoolStats(self.max_size, self._open, len(self._idle), in_use, self._waiting)

    async def close(self) -> None:
        """Close idle connections; borrowed ones are closed when handed back."""
        self._closed = True
        while self._idle:
            self._discard(self._idle.pop())
        await trio.lowlevel.checkpoint()


class _Lease:
    """``async with pool.connection() as conn``: borrow on entry, hand back on exit.

    A class rather than ``@asynccontextmanager``: every borrow would otherwise
    create an async generator, and Trio's async-generator hooks (first-iteration
    registration in a WeakSet, finalisation) cost more than the borrow itself.
    """

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._conn: Connection | None = None

    async def __aenter__(self) -> Connection:
        if self._conn is not None:
            raise RuntimeError("this pool.connection() block is already in use")
        self._conn = await self._pool._acquire()
        return self._conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        await self._pool._release(conn)
        # The connection broke under the borrower (server stopped, backend
        # terminated): every caller sees one store error for "the database is away".
        if isinstance(exc, psycopg.OperationalError) and conn.broken:
            raise DatabaseUnavailable(f"database connection lost: {exc}") from exc
