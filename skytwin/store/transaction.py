"""Transactions that retry serialization failures."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import structlog
import trio
from psycopg import errors as pg_errors
from psycopg import sql

from .errors import DatabaseUnavailable
from .pool import Connection, Pool

log = structlog.get_logger("skytwin.store")

T = TypeVar("T")

# SQLSTATE 40001 and 40P01: the transaction lost a race and may simply run again.
RETRYABLE_SQL_ERRORS = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)
ISOLATION_LEVELS = ("read committed", "repeatable read", "serializable")


async def transaction(
    pool: Pool,
    fn: Callable[[Connection], Awaitable[T]],
    *,
    isolation: str | None = None,
    attempts: int = 5,
    base_delay_s: float = 0.02,
    cap_s: float = 1.0,
    rng: random.Random | None = None,
) -> T:
    """Run ``fn(conn)`` in one transaction, retrying 40001/40P01 with jittered backoff.

    ``fn`` may run more than once, so it must have no effects outside the
    database. Any other error rolls back and propagates; a connection lost
    mid-transaction becomes DatabaseUnavailable (the outcome of a commit that
    lost its connection is unknown, so it is never retried here).
    """
    if isolation is not None and isolation not in ISOLATION_LEVELS:
        raise ValueError(f"isolation must be one of {ISOLATION_LEVELS}, not {isolation!r}")
    rng = rng or random.Random()
    for attempt in range(1, attempts + 1):
        try:
            async with pool.connection() as conn:
                async with conn.transaction():
                    if isolation is not None:
                        await conn.execute(
                            sql.SQL("set transaction isolation level {}").format(sql.SQL(isolation))
                        )
                    return await fn(conn)
        except RETRYABLE_SQL_ERRORS as exc:
            if attempt == attempts:
                raise
            delay = rng.uniform(0, min(cap_s, base_delay_s * 2**attempt))
            log.info(
                "skytwin.transaction_retry",
                attempt=attempt,
                delay_s=round(delay, 4),
                sqlstate=exc.sqlstate,
            )
            await trio.sleep(delay)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"database connection lost: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def one_statement(pool: Pool, fn: Callable[[Connection], Awaitable[T]]) -> T:
    """Run ``fn(conn)``, which sends exactly one statement, without BEGIN and COMMIT.

    One statement is atomic on its own, so an explicit transaction would only add
    two round trips. Errors translate as in ``transaction``: a connection lost
    mid-statement is DatabaseUnavailable (the outcome is unknown; never retried).
    """
    try:
        async with pool.connection() as conn:
            return await fn(conn)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"database connection lost: {exc}") from exc
