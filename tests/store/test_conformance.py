"""Conformance of the store to its contract with psycopg's internals and with callers.

``skytwin.store`` drives psycopg's generators from Trio (``wait``, ``lock``,
``_connect_gen``, ``_cancel_gen``). These tests pin what that must keep
delivering on a real PostgreSQL: transactions commit or leave nothing,
cancellation reaches the server and leaves a usable connection, cleanup behind
a frozen server is bounded, broken connections never come back out of the pool,
serialization failures are retried, the pool keeps its size and deadline, and
migrations are safe to run twice or at once.

Tests marked ``slow`` use a dedicated server (``dedicated_pg``) they may freeze,
stop or kill; everything else uses the session server.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
import trio.testing
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import dict_row

from skytwin.store import (
    DatabaseUnavailable,
    MigrationError,
    Pool,
    PoolStats,
    PoolTimeout,
    apply_migrations,
    check_database,
    load_migrations,
    transaction,
)
from skytwin.store.connection import CANCEL_CLEANUP_S, TrioConnection
from skytwin.store.migrate import MIGRATION_LOCK_KEY, Migration
from skytwin.store.pool import Connection

from .conftest import DedicatedServer, wait_until

IDLE = pq.TransactionStatus.IDLE
# Scheduling slack on top of a bound the code itself promises.
MARGIN_S = 0.25
FAST_RETRY: dict[str, Any] = {"base_delay_s": 0.001, "cap_s": 0.005}


# ---- helpers ----


async def make_table(pool: Pool) -> None:
    """A scratch table of this test's own (each test has its own database)."""
    async with pool.connection() as conn:
        await conn.execute("create table t (id integer primary key, note text not null)")


async def rows(pool: Pool) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute("select id, note from t order by id")
        return await cur.fetchall()


async def backend_pid(conn: Connection) -> int:
    cur = await conn.execute("select pg_backend_pid() as pid")
    row = await cur.fetchone()
    assert row is not None
    return int(row["pid"])


def _activity(url: str, pid: int) -> dict[str, Any] | None:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(
            "select state, wait_event, query from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()


async def wait_for_backend(
    url: str, pid: int, accept: Callable[[dict[str, Any] | None], bool], what: str
) -> dict[str, Any] | None:
    """Poll pg_stat_activity from a separate, blocking connection until ``accept`` holds."""
    seen: list[dict[str, Any] | None] = []

    async def check() -> bool:
        seen.append(await trio.to_thread.run_sync(_activity, url, pid))
        return accept(seen[-1])

    await wait_until(check, lambda: f"backend {pid} {what} (last seen: {seen[-1:]})", 5)
    return seen[-1]


def is_idle(row: dict[str, Any] | None) -> bool:
    return row is not None and row["state"] == "idle"


def runs_sleep(row: dict[str, Any] | None) -> bool:
    return row is not None and row["state"] == "active" and "pg_sleep" in row["query"]


# ---- commit and rollback ----


async def test_transaction_commits_what_fn_wrote(pool: Pool) -> None:
    await make_table(pool)

    async def write(conn: Connection) -> str:
        await conn.execute("insert into t values (1, 'a'), (2, 'b')")
        return "done"

    assert await transaction(pool, write) == "done"
    assert await rows(pool) == [{"id": 1, "note": "a"}, {"id": 2, "note": "b"}]


async def test_transaction_failing_fn_leaves_no_partial_write(pool: Pool) -> None:
    await make_table(pool)
    calls = 0

    async def half_then_fail(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("insert into t values (1, 'first half')")
        raise ValueError("second half failed")

    with pytest.raises(ValueError, match="second half failed"):
        await transaction(pool, half_then_fail)
    assert calls == 1
    assert await rows(pool) == []
    assert pool.stats().in_use == 0


async def test_transaction_sql_error_rolls_back_and_is_not_retried(pool: Pool) -> None:
    await make_table(pool)
    calls = 0

    async def duplicate(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("insert into t values (1, 'a')")
        await conn.execute("insert into t values (1, 'again')")

    with pytest.raises(pg_errors.UniqueViolation):
        await transaction(pool, duplicate, **FAST_RETRY)
    assert calls == 1
    assert await rows(pool) == []


async def test_transaction_isolation_level_is_applied(shared_pool: Pool) -> None:
    pool = shared_pool

    async def level(conn: Connection) -> str:
        cur = await conn.execute("show transaction_isolation")
        row = await cur.fetchone()
        assert row is not None
        return str(row["transaction_isolation"])

    assert await transaction(pool, level) == "read committed"
    assert await transaction(pool, level, isolation="serializable") == "serializable"
    with pytest.raises(ValueError, match="isolation"):
        await transaction(pool, level, isolation="serialisable; drop table users")


async def test_conn_transaction_commits_and_rolls_back(pool: Pool) -> None:
    await make_table(pool)
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("insert into t values (1, 'kept')")
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.execute("insert into t values (2, 'dropped')")
                raise RuntimeError("boom")
        async with conn.transaction() as tx:
            await conn.execute("insert into t values (3, 'rolled back on purpose')")
            raise psycopg.Rollback(tx)
        # Savepoints: the inner failure is undone, the outer block still commits.
        async with conn.transaction():
            await conn.execute("insert into t values (4, 'outer')")
            with pytest.raises(pg_errors.UniqueViolation):
                async with conn.transaction():
                    await conn.execute("insert into t values (4, 'inner duplicate')")
        assert conn.pgconn.transaction_status == IDLE
    assert await rows(pool) == [{"id": 1, "note": "kept"}, {"id": 4, "note": "outer"}]


# ---- cancellation on a healthy server ----


async def test_cancelled_query_is_cancelled_on_the_server_and_conn_stays_usable(
    shared_pool: Pool, shared_url: str
) -> None:
    pool, database_url = shared_pool, shared_url
    async with pool.connection() as conn:
        pid = await backend_pid(conn)
        started = time.perf_counter()
        with trio.move_on_after(0.2) as scope:
            await conn.execute("select pg_sleep(10)")
        elapsed = time.perf_counter() - started
        assert scope.cancelled_caught
        assert elapsed < 0.5, f"cancel took {elapsed:.3f} s of real time"
        # cancel + drain succeeded: the same connection, idle and usable.
        assert not conn.closed
        assert conn.pgconn.transaction_status == IDLE
        await wait_for_backend(database_url, pid, is_idle, "is idle after the cancel")
        assert await backend_pid(conn) == pid
    async with pool.connection() as conn:
        assert await backend_pid(conn) == pid  # the pool kept it
    assert pool.stats().open == 1


async def test_cancelled_transaction_leaves_nothing_and_is_not_retried(
    pool: Pool, database_url: str
) -> None:
    await make_table(pool)
    calls = 0
    pids: list[int] = []

    async def write_then_hang(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        pids.append(await backend_pid(conn))
        await conn.execute("insert into t values (1, 'never committed')")
        await conn.execute("select pg_sleep(10)")

    started = time.perf_counter()
    with trio.move_on_after(0.2) as scope:
        await transaction(pool, write_then_hang, **FAST_RETRY)
    assert scope.cancelled_caught
    assert time.perf_counter() - started < 0.5
    assert calls == 1  # cancellation from outside is never retried
    await wait_for_backend(database_url, pids[0], is_idle, "is idle after the cancel")
    assert await rows(pool) == []
    async with pool.connection() as conn:
        assert conn.pgconn.transaction_status == IDLE
        assert await backend_pid(conn) == pids[0]


# ---- a frozen server ----


@pytest.mark.slow
async def test_frozen_server_cancel_cleanup_is_bounded_and_closes_the_conn(
    dedicated_pg: DedicatedServer,
) -> None:
    pool = Pool(dedicated_pg.url(), max_size=2)
    try:
        async with pool.connection() as conn:
            pid = await backend_pid(conn)
            query_scope = trio.CancelScope()
            exited = trio.Event()
            exited_at: list[float] = []

            async def sleep_query() -> None:
                with query_scope:
                    await conn.execute("select pg_sleep(10)")
                exited_at.append(time.perf_counter())
                exited.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sleep_query)
                await wait_for_backend(dedicated_pg.url(), pid, runs_sleep, "runs pg_sleep")
                with dedicated_pg.frozen():
                    cancelled_at = time.perf_counter()
                    query_scope.cancel()
                    with trio.fail_after(CANCEL_CLEANUP_S + 5):
                        await exited.wait()
            assert query_scope.cancelled_caught
            cleanup_s = exited_at[0] - cancelled_at
            assert cleanup_s <= CANCEL_CLEANUP_S + MARGIN_S, f"cleanup took {cleanup_s:.3f} s"
            assert conn.closed  # unknown state: closed, not handed back hung
        assert pool.stats() == PoolStats(max_size=2, open=0, idle=0, in_use=0, waiting=0)
        # Thawed, the pool replaces the closed connection.
        async with pool.connection() as conn:
            assert await backend_pid(conn) != pid
    finally:
        await pool.close()


@pytest.mark.slow
async def test_frozen_server_probe_answers_within_its_deadline(
    dedicated_pg: DedicatedServer,
) -> None:
    pool = Pool(dedicated_pg.url(), max_size=2)
    try:
        async with pool.connection() as conn:  # leave one idle connection in the pool
            await conn.execute("select 1")
        assert (await check_database(pool, 1.0)).ok
        with dedicated_pg.frozen():
            # Idle connection: the query is cancelled, cleanup bounded, connection closed.
            started = time.perf_counter()
            result = await check_database(pool, 0.2)
            elapsed = time.perf_counter() - started
            assert not result.ok
            assert elapsed <= 0.2 + CANCEL_CLEANUP_S + MARGIN_S, elapsed
            assert pool.stats().open == 0
            # No idle connection: the connect itself is abandoned at the deadline.
            started = time.perf_counter()
            result = await check_database(pool, 0.2)
            elapsed = time.perf_counter() - started
            assert not result.ok
            assert elapsed <= 0.2 + MARGIN_S, elapsed
            assert pool.stats() == PoolStats(max_size=2, open=0, idle=0, in_use=0, waiting=0)
        assert (await check_database(pool, 5.0)).ok
    finally:
        await pool.close()


# ---- a restarted server ----


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_restart_discards_broken_connections(dedicated_pg: DedicatedServer, how: str) -> None:
    pool = Pool(dedicated_pg.url(), max_size=4)
    try:
        old_pids: set[int] = set()
        holding = trio.Event()
        release = trio.Event()

        async def borrow_idle() -> None:
            async with pool.connection() as conn:
                old_pids.add(await backend_pid(conn))
                if len(old_pids) == 3:
                    holding.set()
                await release.wait()

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(borrow_idle)
            await holding.wait()
            release.set()
        assert pool.stats().idle == 3

        async with pool.connection() as held:
            await backend_pid(held)
            try:
                if how == "stop":
                    await dedicated_pg.stop()
                else:
                    await dedicated_pg.kill()
            finally:
                await dedicated_pg.start()
            # The connection in use when the server went away fails; it is not retried.
            with pytest.raises(psycopg.OperationalError):
                await held.execute("select 1")

        # The next acquire skips every dead connection and opens a fresh one.
        async with pool.connection() as conn:
            new_pid = await backend_pid(conn)
        assert new_pid not in old_pids
        assert pool.stats() == PoolStats(max_size=4, open=1, idle=1, in_use=0, waiting=0)
    finally:
        await pool.close()


async def test_terminated_backend_is_discarded(shared_pool: Pool, shared_url: str) -> None:
    pool, database_url = shared_pool, shared_url
    async with pool.connection() as conn:
        pid = await backend_pid(conn)
    assert pool.stats().idle == 1

    def terminate() -> None:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (pid,))

    await trio.to_thread.run_sync(terminate)
    # Once the backend has exited its socket is closed: "the server said goodbye".
    await wait_for_backend(database_url, pid, lambda row: row is None, "has exited")
    async with pool.connection() as conn:
        assert await backend_pid(conn) != pid
    assert pool.stats() == PoolStats(max_size=5, open=1, idle=1, in_use=0, waiting=0)


async def test_a_connection_lost_under_a_borrower_is_database_unavailable(
    shared_pool: Pool,
) -> None:
    with pytest.raises(DatabaseUnavailable, match="database connection lost"):
        async with shared_pool.connection() as conn:
            await conn.execute("select pg_terminate_backend(pg_backend_pid())")
    assert shared_pool.stats().in_use == 0
    async with shared_pool.connection() as conn:
        assert (await (await conn.execute("select 1 as one")).fetchone()) == {"one": 1}


async def test_connection_lost_in_transaction_is_unavailable_not_retried(
    shared_pool: Pool,
) -> None:
    pool = shared_pool
    calls = 0
    pids: list[int] = []

    async def lose_connection(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        pids.append(await backend_pid(conn))
        await conn.execute("select pg_terminate_backend(pg_backend_pid())")

    with pytest.raises(DatabaseUnavailable):
        await transaction(pool, lose_connection, **FAST_RETRY)
    assert calls == 1
    assert pool.stats().in_use == 0
    async with pool.connection() as conn:
        assert await backend_pid(conn) != pids[0]
    assert pool.stats() == PoolStats(max_size=5, open=1, idle=1, in_use=0, waiting=0)


# ---- serialization failures ----


@pytest.mark.parametrize(
    ("sqlstate", "error"),
    [("40001", pg_errors.SerializationFailure), ("40P01", pg_errors.DeadlockDetected)],
)
async def test_retryable_error_reruns_fn_and_commits_once(
    pool: Pool, sqlstate: str, error: type[Exception]
) -> None:
    await make_table(pool)
    calls = 0

    async def fail_first_attempt(conn: Connection) -> int:
        nonlocal calls
        calls += 1
        await conn.execute("insert into t values (1, %s)", (f"attempt {calls}",))
        if calls == 1:
            await conn.execute(
                f"do $$ begin raise exception 'lost a race' using errcode = '{sqlstate}'; end $$"
            )
        return calls

    assert await transaction(pool, fail_first_attempt, rng=random.Random(7), **FAST_RETRY) == 2
    assert await rows(pool) == [{"id": 1, "note": "attempt 2"}]
    assert pool.stats().in_use == 0


async def test_retryable_error_propagates_after_attempts(pool: Pool) -> None:
    await make_table(pool)
    calls = 0

    async def always_lose(conn: Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("insert into t values (%s, 'x')", (calls,))
        await conn.execute("do $$ begin raise exception using errcode = '40001'; end $$")

    with pytest.raises(pg_errors.SerializationFailure):
        await transaction(pool, always_lose, attempts=3, rng=random.Random(7), **FAST_RETRY)
    assert calls == 3
    assert await rows(pool) == []
    assert pool.stats().in_use == 0


async def test_real_serialization_conflict_is_retried(pool: Pool) -> None:
    """Write skew under SERIALIZABLE: two doctors both go off call; the server refuses one."""
    async with pool.connection() as conn:
        await conn.execute("create table on_call (name text primary key, on_call bool not null)")
        await conn.execute("insert into on_call values ('alice', true), ('bob', true)")

    have_read = {"alice": trio.Event(), "bob": trio.Event()}
    finished = {"alice": trio.Event(), "bob": trio.Event()}
    calls: Counter[str] = Counter()
    went_off: dict[str, bool] = {}

    def go_off_call(me: str, other: str) -> Callable[[Connection], Awaitable[bool]]:
        async def fn(conn: Connection) -> bool:
            calls[me] += 1
            if calls[me] > 1:
                # Retry only once the winner has committed, so it sees the winner's write.
                await finished[other].wait()
            cur = await conn.execute("select count(*) as n from on_call where on_call")
            row = await cur.fetchone()
            assert row is not None
            if calls[me] == 1:
                # Both read before either writes: the classic write skew.
                have_read[me].set()
                await have_read[other].wait()
            if row["n"] < 2:
                return False
            await conn.execute("update on_call set on_call = false where name = %s", (me,))
            return True

        return fn

    async def doctor(me: str, other: str) -> None:
        went_off[me] = await transaction(
            pool, go_off_call(me, other), isolation="serializable", **FAST_RETRY
        )
        finished[me].set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(doctor, "alice", "bob")
            nursery.start_soon(doctor, "bob", "alice")

    assert sorted(calls.values()) == [1, 2]  # the loser ran again, once
    loser = next(name for name, n in calls.items() if n == 2)
    assert went_off == {loser: False, ("bob" if loser == "alice" else "alice"): True}
    async with pool.connection() as conn:
        cur = await conn.execute("select name from on_call where on_call")
        assert await cur.fetchall() == [{"name": loser}]


# ---- the pool ----


async def test_acquire_deadline_is_exact(
    shared_url: str, autojump_clock: trio.testing.MockClock
) -> None:
    """PoolTimeout at exactly ``acquire_timeout_s`` of virtual time; a release before it wins.

    Virtual time must not jump while we wait on the real server, so autojump is
    paused while the pool's one connection is opened; after that, borrowing the
    idle connection does no database I/O.
    """
    autojump_clock.autojump_threshold = math.inf
    pool = Pool(shared_url, max_size=1, acquire_timeout_s=2.5)
    try:
        async with pool.connection() as conn:
            await backend_pid(conn)
        autojump_clock.autojump_threshold = 0

        async def hold_for(seconds: float, *, task_status: Any) -> None:
            async with pool.connection() as conn:
                task_status.started(conn)
                await trio.sleep(seconds)

        async with trio.open_nursery() as nursery:
            await nursery.start(hold_for, 10)
            started = trio.current_time()
            with pytest.raises(PoolTimeout):
                async with pool.connection():
                    pytest.fail("a second connection from a pool of one")
            assert trio.current_time() - started == 2.5
            assert pool.stats() == PoolStats(max_size=1, open=1, idle=0, in_use=1, waiting=0)

        async with trio.open_nursery() as nursery:
            held = await nursery.start(hold_for, 1.5)
            started = trio.current_time()
            async with pool.connection() as conn:
                assert trio.current_time() - started == 1.5
                assert conn is held
    finally:
        await pool.close()


async def test_pool_never_exceeds_max_size(shared_pool: Pool) -> None:
    pool = shared_pool
    borrowed = 0
    most_borrowed = 0
    pool_full = trio.Event()
    pids: set[int] = set()
    server_side: list[int] = []

    async def borrower() -> None:
        nonlocal borrowed, most_borrowed
        async with pool.connection() as conn:
            borrowed += 1
            most_borrowed = max(most_borrowed, borrowed)
            assert pool.stats().open <= pool.max_size
            if borrowed == pool.max_size:
                pool_full.set()
            # The first five hold on until all five are out at once; the rest
            # queue behind them.
            await pool_full.wait()
            cur = await conn.execute(
                "select pg_backend_pid() as pid, (select count(*) from pg_stat_activity"
                " where datname = current_database() and application_name = %s) as n",
                (pool.application_name,),
            )
            row = await cur.fetchone()
            assert row is not None
            pids.add(row["pid"])
            server_side.append(row["n"])
            borrowed -= 1

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(borrower)
    assert most_borrowed == 5
    assert len(pids) == 5
    assert max(server_side) <= 5
    assert pool.stats() == PoolStats(max_size=5, open=5, idle=5, in_use=0, waiting=0)


async def test_pool_hands_back_connections_idle(database_url: str) -> None:
    pool = Pool(database_url, max_size=1)
    try:
        await make_table(pool)
        async with pool.connection() as conn:
            pid = await backend_pid(conn)
            await conn.execute("begin")
            await conn.execute("insert into t values (1, 'uncommitted')")
        async with pool.connection() as conn:
            assert await backend_pid(conn) == pid
            assert conn.pgconn.transaction_status == IDLE
            cur = await conn.execute("select count(*) as n from t")
            assert await cur.fetchone() == {"n": 0}
            # A borrower that leaves a failed transaction behind.
            await conn.execute("begin")
            with pytest.raises(pg_errors.DivisionByZero):
                await conn.execute("select 1 / 0")
            assert conn.pgconn.transaction_status == pq.TransactionStatus.INERROR
        # A borrower that raises with a transaction open.
        with pytest.raises(KeyError):
            async with pool.connection() as conn:
                await conn.execute("begin")
                await conn.execute("insert into t values (2, 'uncommitted too')")
                raise KeyError("boom")
        async with pool.connection() as conn:
            assert await backend_pid(conn) == pid
            assert conn.pgconn.transaction_status == IDLE
            cur = await conn.execute("select count(*) as n from t")
            assert await cur.fetchone() == {"n": 0}
        assert pool.stats() == PoolStats(max_size=1, open=1, idle=1, in_use=0, waiting=0)
    finally:
        await pool.close()


async def test_pool_stats(shared_url: str) -> None:
    pool = Pool(shared_url, max_size=3)
    assert pool.stats() == PoolStats(max_size=3, open=0, idle=0, in_use=0, waiting=0)
    async with pool.connection():
        assert pool.stats() == PoolStats(max_size=3, open=1, idle=0, in_use=1, waiting=0)
    assert pool.stats() == PoolStats(max_size=3, open=1, idle=1, in_use=0, waiting=0)

    held = 0
    all_held = trio.Event()
    release = trio.Event()

    async def holder() -> None:
        nonlocal held
        async with pool.connection() as conn:
            await conn.execute("select 1")
            held += 1
            if held == 3:
                all_held.set()
            await release.wait()

    async def waiter() -> None:
        async with pool.connection():
            pass

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(holder)
        await all_held.wait()
        assert pool.stats() == PoolStats(max_size=3, open=3, idle=0, in_use=3, waiting=0)
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.stats() == PoolStats(max_size=3, open=3, idle=0, in_use=3, waiting=1)
        release.set()
    assert pool.stats() == PoolStats(max_size=3, open=3, idle=3, in_use=0, waiting=0)

    await pool.close()
    assert pool.stats() == PoolStats(max_size=3, open=0, idle=0, in_use=0, waiting=0)
    with pytest.raises(DatabaseUnavailable):
        async with pool.connection():
            pass


async def test_failed_connect_releases_its_slot(pg_server: Any) -> None:
    pool = Pool(pg_server.url("no_such_database"), max_size=1, acquire_timeout_s=0.5)
    try:
        for _ in range(2):  # a leaked slot would turn the second into a PoolTimeout
            with pytest.raises(DatabaseUnavailable, match="no_such_database"):
                async with pool.connection():
                    pass
        assert pool.stats() == PoolStats(max_size=1, open=0, idle=0, in_use=0, waiting=0)
    finally:
        await pool.close()


async def test_queries_from_many_tasks_on_one_connection_serialize(shared_pool: Pool) -> None:
    pool = shared_pool
    results: dict[int, list[int]] = {}

    async with pool.connection() as conn:

        async def ask(task: int) -> None:
            got = results.setdefault(task, [])
            for i in range(20):
                value = task * 1000 + i
                cur = await conn.execute("select %s::integer as v, pg_sleep(0.0005)", (value,))
                row = await cur.fetchone()
                assert row is not None
                got.append(row["v"])

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for task in range(8):
                    nursery.start_soon(ask, task)
        assert conn.pgconn.transaction_status == IDLE
    assert results == {task: [task * 1000 + i for i in range(20)] for task in range(8)}


async def test_one_connection_lock_is_held_for_the_whole_query(shared_pool: Pool) -> None:
    pool = shared_pool
    order: list[str] = []
    async with pool.connection() as conn:
        first_sent = trio.Event()

        async def slow_query() -> None:
            await conn.execute("select pg_sleep(0.05)")
            order.append("slow done")  # no checkpoint between the lock's release and this

        async def slow() -> None:
            async with trio.open_nursery() as inner:
                inner.start_soon(slow_query)
                await trio.testing.wait_all_tasks_blocked()
                first_sent.set()

        async def fast() -> None:
            await first_sent.wait()
            assert conn.lock.locked()
            await conn.execute("select 1")
            order.append("fast done")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            nursery.start_soon(fast)
    assert order == ["slow done", "fast done"]


# ---- TrioConnection directly ----


async def test_trio_connection_connect_failure_is_database_unavailable(
    pg_server: Any, tmp_path: Path
) -> None:
    with pytest.raises(DatabaseUnavailable):
        await TrioConnection.connect(pg_server.url("no_such_database"))
    with pytest.raises(DatabaseUnavailable):
        await TrioConnection.connect(f"postgresql:///postgres?host={tmp_path}")


# ---- migrations ----


async def test_migrations_twice_is_a_no_op(empty_database_url: str) -> None:
    packaged = load_migrations()
    pool = Pool(empty_database_url, max_size=2)
    try:
        assert await apply_migrations(pool) == [m.name for m in packaged]
        assert await apply_migrations(pool) == []
        async with pool.connection() as conn:
            cur = await conn.execute("select version, name from schema_migrations order by 1")
            assert await cur.fetchall() == [
                {"version": m.version, "name": m.name} for m in packaged
            ]
    finally:
        await pool.close()


async def test_migrations_on_the_migrated_test_database_do_nothing(pool: Pool) -> None:
    assert await apply_migrations(pool) == []


async def test_concurrent_migrations_apply_each_version_once(empty_database_url: str) -> None:
    packaged = load_migrations()
    pools = [Pool(empty_database_url, max_size=1) for _ in range(2)]
    applied: list[list[str]] = []
    try:
        # Hold the migration lock so that both runners are really waiting at once.
        with psycopg.connect(empty_database_url, autocommit=True) as gate:
            gate.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))

            def lock_waiters() -> int:
                row = gate.execute(
                    "select count(*) from pg_locks where locktype = 'advisory' and not granted"
                    " and database = (select oid from pg_database"
                    " where datname = current_database())"
                ).fetchone()
                assert row is not None
                return int(row[0])

            async def run(pool: Pool) -> None:
                applied.append(await apply_migrations(pool))

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for pool in pools:
                        nursery.start_soon(run, pool)

                    async def both_wait() -> bool:
                        return await trio.to_thread.run_sync(lock_waiters) == 2

                    await wait_until(both_wait, "both runners wait for the migration lock", 5)
                    await trio.to_thread.run_sync(
                        gate.execute, "select pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,)
                    )
        assert sorted(applied, key=len) == [[], [m.name for m in packaged]]
        async with pools[0].connection() as conn:
            cur = await conn.execute(
                "select version, count(*) as n from schema_migrations group by 1 order by 1"
            )
            assert await cur.fetchall() == [{"version": m.version, "n": 1} for m in packaged]
    finally:
        for pool in pools:
            await pool.close()


@pytest.mark.parametrize(
    "migration",
    [
        Migration(1, "1_short_number.sql", "select 1"),
        Migration(1, "0001-dash.sql", "select 1"),
        Migration(1, "0001_Upper.sql", "select 1"),
        Migration(2, "0001_wrong_version.sql", "select 1"),
    ],
    ids=lambda m: m.name,
)
async def test_malformed_migration_is_refused_before_touching_the_database(
    tmp_path: Path, migration: Migration
) -> None:
    # No server behind this URL: connecting first would be DatabaseUnavailable.
    pool = Pool(f"postgresql:///nowhere?host={tmp_path}", max_size=1)
    try:
        with pytest.raises(MigrationError, match=migration.name):
            await apply_migrations(pool, [migration])
        assert pool.stats().open == 0
    finally:
        await pool.close()


def test_malformed_migration_file_name_raises(tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text("select 1")
    assert [m.name for m in load_migrations(tmp_path)] == ["0001_init.sql"]
    (tmp_path / "2_next.sql").write_text("select 2")
    with pytest.raises(MigrationError, match="2_next.sql"):
        load_migrations(tmp_path)


def test_duplicate_migration_versions_raise(tmp_path: Path) -> None:
    (tmp_path / "0001_init.sql").write_text("select 1")
    (tmp_path / "0001_again.sql").write_text("select 1")
    with pytest.raises(MigrationError, match="share a version"):
        load_migrations(tmp_path)


async def test_failing_migration_names_the_file_and_leaves_no_ledger_row(
    empty_database_url: str,
) -> None:
    pool = Pool(empty_database_url, max_size=1)
    try:
        good = Migration(1, "0001_good.sql", "create table good (id integer)")
        bad = Migration(2, "0002_bad.sql", "create table bad (id integer); select 1 / 0")
        with pytest.raises(MigrationError, match="0002_bad.sql"):
            await apply_migrations(pool, [bad, good])
        async with pool.connection() as conn:
            cur = await conn.execute("select version from schema_migrations")
            assert await cur.fetchall() == [{"version": 1}]
            cur = await conn.execute("select to_regclass('bad') is null as gone")
            assert await cur.fetchone() == {"gone": True}
        # Fixed, it applies; what was applied stays applied.
        fixed = Migration(2, "0002_bad.sql", "create table bad (id integer)")
        assert await apply_migrations(pool, [good, fixed]) == ["0002_bad.sql"]
    finally:
        await pool.close()
