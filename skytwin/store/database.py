"""The database a running SkyTwin uses: embedded or external, pooled and migrated."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import trio

from ..config import Settings
from .embedded import embedded_postgres
from .migrate import apply_migrations
from .pool import Pool


@dataclass(frozen=True, slots=True)
class DatabaseCheck:
    """Result of one readiness probe of the database."""

    ok: bool
    latency_ms: float | None
    error: str | None


async def check_database(pool: Pool, timeout_s: float) -> DatabaseCheck:
    """``select 1`` under its own short deadline: a hung database is a quick failure."""
    started = time.perf_counter()
    with trio.move_on_after(timeout_s) as scope:
        try:
            async with pool.connection() as conn:
                await conn.execute("select 1")
        except Exception as exc:  # noqa: BLE001 - any failure is "not ready", with its reason
            return DatabaseCheck(False, None, _describe(exc))
    if scope.cancelled_caught:
        return DatabaseCheck(False, None, f"no answer within {timeout_s:g} s")
    return DatabaseCheck(True, round((time.perf_counter() - started) * 1000, 2), None)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


@asynccontextmanager
async def open_database(
    settings: Settings, *, pool_size: int = 10, migrate: bool = True, owner: bool = True
) -> AsyncIterator[Pool]:
    """Start the embedded server if no URL is set, open the pool, apply migrations.

    ``owner=False``: another process owns the embedded server; leave it running.
    """
    async with AsyncExitStack() as stack:
        url = settings.database_url
        if url is None:
            url = await stack.enter_async_context(
                embedded_postgres(settings.home, stop_on_exit=owner)
            )
        pool = Pool(url, max_size=pool_size)
        stack.push_async_callback(pool.close)
        if migrate:
            await apply_migrations(pool)
        yield pool
