"""Housekeeping children: account discovery, approval expiry, decision retries."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import structlog
import trio

from ..nursery import Restart, Supervisor, stop_requested
from ..store import Pool, StoreError, transaction
from ..store import approvals as store_approvals
from ..store.connections import Account, active_accounts
from ..store.pool import Connection
from ..store.signals import retry_unprocessed
from .poller import Poller

log = structlog.get_logger("skytwin.housekeeping")


# New accounts start this many side by side. One at a time, each start waits for the
# child's first turn on the scheduler while the accounts started before it already
# poll: 10,000 accounts took 91 s to start on two cores, and the web server starts
# only after the first round. All at once would hold 10,000 start tasks in memory.
START_BATCH = 256


def child_name(account: Account) -> str:
    """The users supervisor's name for an account's poll task."""
    return f"account:{account.connection_id}"


async def sync_accounts(pool: Pool, poller: Poller, users: Supervisor) -> tuple[int, int]:
    """Start a poll task per active account and remove the rest; return (started, removed)."""
    async with pool.connection() as conn:
        accounts = await active_accounts(conn)
    wanted = {child_name(a): a for a in accounts}
    removed = 0
    for name in users.child_names():
        if name not in wanted:
            await users.remove_child(name)
            poller.forget(int(name.split(":", 1)[1]))
            removed += 1
            log.info("skytwin.account_removed", child=name)
    new = [(name, account) for name, account in wanted.items() if not users.has_child(name)]
    started = 0
    for low in range(0, len(new), START_BATCH):
        async with trio.open_nursery() as nursery:
            for name, account in new[low : low + START_BATCH]:
                # Transient: a crash restarts it; returning (needs re-auth, stop) ends it.
                nursery.start_soon(
                    partial(
                        users.start_child,
                        name,
                        partial(poller.poll_account, account),
                        restart=Restart.TRANSIENT,
                    )
                )
        started += len(new[low : low + START_BATCH])
    if started:
        log.info("skytwin.accounts_started", started=started, total=len(wanted))
    return started, removed


async def run_discovery(
    pool: Pool,
    poller: Poller,
    users: Supervisor,
    *,
    interval_s: float,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep the users supervisor's children equal to the connected accounts.

    Ready once the first round has run (successfully or not: a database that is
    away at start is retried every ``interval_s``).
    """
    stop = stop_requested()
    first = True
    while not stop.is_set():
        try:
            await sync_accounts(pool, poller, users)
        except StoreError as exc:
            log.warning("skytwin.discovery_database_error", error=str(exc))
        if first:
            task_status.started()
            first = False
        with trio.move_on_after(interval_s):
            await stop.wait()


async def run_expiry_sweep(
    pool: Pool,
    *,
    interval_s: float = 60.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every ``interval_s``: expire overdue approval requests, retry failed decisions."""
    stop = stop_requested()
    task_status.started()
    while not stop.is_set():
        with trio.move_on_after(interval_s):
            await stop.wait()
        if stop.is_set():
            return
        now = datetime.now(UTC)
        try:
            async with pool.connection() as conn:
                expired = await store_approvals.expire_pending(conn, now=now)
            retried = await transaction(pool, partial(_retry_unprocessed, now=now))
        except StoreError as exc:
            log.warning("skytwin.sweep_database_error", error=str(exc))
            continue
        if expired or retried:
            log.info("skytwin.sweep", expired=expired, decisions_retried=retried)


async def _retry_unprocessed(conn: Connection, *, now: datetime) -> int:
    return await retry_unprocessed(conn, now=now)
