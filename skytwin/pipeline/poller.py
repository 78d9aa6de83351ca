"""The per-account poll loop: one supervised child per connected Google account.

One cycle::

    cursors (memory) ─▶ breaker.permit() ─▶ Gmail ∥ Calendar ─▶ one transaction:
                                                                signals + decisions + cursors

What must stay true:

* **Nothing lost, nothing doubled**: a cursor advances only in the transaction
  that stores the signals it covers; duplicates are no-ops.
* **Isolation**: every account has its own breaker, cycle deadline and task; a
  failing account sleeps until its breaker may half-open and costs the others
  nothing.
* The breaker counts only Google's failures (and cycle timeouts while talking
  to Google). A database outage is everyone's problem, not the account's: it
  is logged and the cycle simply runs again on schedule.
* Shutdown: a stop request is honoured between cycles; a cycle in flight when
  the grace runs out is cancelled, and its cursor stays where it was.
* A quiet cycle costs no database round trip: the account's committed cursors
  are kept in memory (read from the database only when unknown: at the first
  cycle, or after a commit that may or may not have landed), and cursors that
  did not move are written only every ``cursor_save_every_s``, to keep their
  ``last_success_at`` fresh. Re-reading an older cursor is always safe: its
  signals come again and are duplicates, which are no-ops.
* First syncs (an account never synced) are admitted ``first_sync_concurrency``
  at a time, before their cycle deadline starts: a first start with thousands of
  accounts queues at the door instead of timing out inside the rate limits.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
import trio

from ..connectors.calendar import sync_calendar
from ..connectors.errors import ConnectorError, GoogleUnavailable, NeedsReauthorization
from ..connectors.gmail import sync_gmail
from ..connectors.signals import Signal
from ..nursery import Breaker, BreakerState, CircuitOpenError, stop_requested
from ..nursery.events import describe_error
from ..store import Pool, StoreError, transaction
from ..store import connections as store_connections
from ..store.connections import Account
from ..store.pool import Connection
from ..store.signals import ingest_signals
from ..store.transaction import one_statement
from .google import Google

log = structlog.get_logger("skytwin.pipeline")


@dataclass(frozen=True, slots=True)
class PollSettings:
    """How often and how long one account is polled."""

    interval_s: float = 60.0
    cycle_deadline_s: float = 120.0
    jitter_fraction: float = 0.1  # each interval varies by ±10 % so accounts never align
    breaker_failures: int = 3
    breaker_open_s: float = 300.0
    breaker_open_max_s: float = 1200.0
    gmail_window_days: int = 7
    cursor_save_every_s: float = 600.0  # unchanged cursors: their last_success_at heartbeat
    first_sync_concurrency: int = 32  # accounts never synced, syncing at once


@dataclass
class AccountStatus:
    """What an operator (and the dashboard) should know about one account's polling."""

    account: Account
    breaker: Breaker
    cycles_ok: int = 0
    cycles_failed: int = 0
    signals_new: int = 0
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    next_due: float | None = None
    needs_reauth: bool = False
    last_cycle_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The cursors as last committed (None: unknown, read them from the database).
    cursors: dict[str, str | None] | None = None
    cursors_saved_at: float = -math.inf  # start (trio time) of the last cycle that wrote them
    # Each connector's last successful sync in this process (the database's may lag
    # by up to cursor_save_every_s).
    connector_success_at: dict[str, datetime] = field(default_factory=dict)


@dataclass
class Fetched:
    """What one cycle got from Google, waiting to be committed."""

    signals: list[Signal] = field(default_factory=list)
    cursors: dict[str, str] = field(default_factory=dict)
    errors: dict[str, ConnectorError] = field(default_factory=dict)


class Poller:
    """Polls every account it is given; shared state lives here, tasks are per account."""

    def __init__(
        self,
        pool: Pool,
        google: Google,
        settings: PollSettings,
        *,
        rng: random.Random | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.pool = pool
        self.google = google
        self.settings = settings
        self.rng = rng or random.Random()
        self.now = now
        # Called after every cycle with (account, result, started, duration_s);
        # metrics and tests listen here. result: ok | failed | skipped | timeout |
        # database_error | cancelled.
        self.cycle_hooks: list[Callable[[Account, str, float, float], None]] = []
        # Called after a commit with (source, number of new signals).
        self.signal_hooks: list[Callable[[str, int], None]] = []
        # Kept across child restarts: a crash must not reset an account's breaker.
        self.statuses: dict[int, AccountStatus] = {}
        self.first_syncs = trio.CapacityLimiter(settings.first_sync_concurrency)

    def status_for(self, account: Account) -> AccountStatus:
        """The account's status record, created on first use."""
        status = self.statuses.get(account.connection_id)
        if status is None:
            s = self.settings
            breaker = Breaker(
                f"account:{account.connection_id}",
                failure_threshold=s.breaker_failures,
                open_s=s.breaker_open_s,
                open_max_s=s.breaker_open_max_s,
                # Google being away counts; a permanent answer (404, 403,
                # invalid_grant) is not an outage and must not pause the account.
                failure_types=(GoogleUnavailable, trio.TooSlowError),
            )
            status = AccountStatus(account=account, breaker=breaker)
            self.statuses[account.connection_id] = status
        return status

    def forget(self, connection_id: int) -> None:
        """Drop an account's status and cached tokens (it is gone)."""
        self.statuses.pop(connection_id, None)
        self.google.forget(connection_id)

    # ---- the supervised child ----

    async def poll_account(
        self, account: Account, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll one account until asked to stop; restarted by the supervisor if it crashes."""
        status = self.status_for(account)
        stop = stop_requested()
        structlog.contextvars.bind_contextvars(
            user_id=account.user_id, connection_id=account.connection_id
        )
        task_status.started()
        interval = self.settings.interval_s
        # Spread first polls over one interval, so a restart doesn't poll everyone at once.
        next_due = trio.current_time() + self.rng.uniform(0, interval)
        while True:
            status.next_due = next_due
            if await _stopped_before(next_due, stop):
                return
            # An open breaker: sleep exactly until it may half-open (or until stop).
            while (probe_at := _blocked_until(status.breaker)) is not None:
                status.next_due = probe_at
                if await _stopped_before(probe_at, stop):
                    return
            await self.cycle(account, status)
            if status.needs_reauth:
                return
            jitter = self.rng.uniform(-1, 1) * self.settings.jitter_fraction * interval
            next_due = max(next_due + interval + jitter, trio.current_time())

    async def cycle(self, account: Account, status: AccountStatus) -> str:
        """One poll of one account, bounded by the cycle deadline; returns its result."""
        started = trio.current_time()
        result = "failed"
        try:
            with trio.fail_after(self.settings.cycle_deadline_s):
                cursors = status.cursors
                if cursors is None:
                    async with self.pool.connection() as conn:
                        cursors = await store_connections.get_cursors(conn, account.connection_id)
                    status.cursors = cursors
            # A first sync fetches a whole window, several calls per connector. At most
            # first_sync_concurrency run at once, and an account waits for its turn
            # before its deadline starts: a crowd of new accounts (a first start) queues
            # here, instead of timing out behind the rate limits and wasting its calls.
            first_sync = None in cursors.values()
            async with self.first_syncs if first_sync else contextlib.nullcontext():
                with trio.fail_after(self.settings.cycle_deadline_s):
                    fetched = Fetched()
                    try:
                        async with status.breaker.permit():
                            fetched = await self.fetch(account, cursors)
                            if fetched.errors:
                                raise next(iter(fetched.errors.values()))
                    except CircuitOpenError:
                        result = "skipped"
                        return result
                    except ConnectorError as exc:
                        await self._failed(account, status, exc, fetched)
                    finally:
                        if fetched.cursors:
                            await self.commit(account, status, fetched, cursors, started=started)
        except trio.TooSlowError:
            result = "timeout"
            self._note_error(
                status, f"cycle exceeded its {self.settings.cycle_deadline_s:g} s deadline"
            )
            status.cycles_failed += 1
            log.warning("skytwin.poll_timeout", deadline_s=self.settings.cycle_deadline_s)
        except StoreError as exc:
            # Not the account's fault: no breaker failure, just try again next cycle.
            result = "database_error"
            self._note_error(status, f"database: {exc}")
            status.cycles_failed += 1
            log.warning("skytwin.poll_database_error", error=str(exc))
        else:
            if not fetched.errors:
                result = "ok"
                status.cycles_ok += 1
                status.last_success_at = self.now()
        finally:
            if _is_cancellation(sys.exc_info()[1]):
                result = "cancelled"  # shutdown or removal; the cursor did not move
            duration = trio.current_time() - started
            status.last_cycle_s = duration
            for hook in self.cycle_hooks:
                hook(account, result, started, duration)
        return result

    async def fetch(self, account: Account, cursors: dict[str, str | None]) -> Fetched:
        """Sync Gmail and Calendar concurrently; collect results and typed errors."""
        tokens = self.google.tokens(account.connection_id)
        fetched = Fetched()

        async def gmail() -> None:
            try:
                result = await sync_gmail(
                    self.google.gmail,
                    tokens,
                    cursors["gmail"],
                    window_days=self.settings.gmail_window_days,
                    limiter=self.google.fetch_limiter,
                    now=self.now,
                )
            except ConnectorError as exc:
                fetched.errors["gmail"] = exc
                return
            fetched.signals.extend(result.signals)
            fetched.cursors["gmail"] = result.cursor

        async def calendar() -> None:
            try:
                result = await sync_calendar(
                    self.google.calendar, tokens, cursors["calendar"], now=self.now
                )
            except ConnectorError as exc:
                fetched.errors["calendar"] = exc
                return
            fetched.signals.extend(result.signals)
            fetched.cursors["calendar"] = result.cursor

        async with trio.open_nursery() as nursery:
            nursery.start_soon(gmail)
            nursery.start_soon(calendar)
        return fetched

    async def commit(
        self,
        account: Account,
        status: AccountStatus,
        fetched: Fetched,
        previous: dict[str, str | None],
        *,
        started: float,
    ) -> None:
        """Store the signals and advance the cursors in one transaction.

        ``previous`` are the cursors the fetch started from and ``started`` the
        cycle's start (trio time). Until this commit is known to have landed, the
        account's cursors count as unknown.
        """
        now = self.now()
        moved = any(previous.get(name) != cursor for name, cursor in fetched.cursors.items())
        heartbeat_due = started - status.cursors_saved_at >= self.settings.cursor_save_every_s
        write_cursors = bool(fetched.signals) or moved or heartbeat_due
        status.cursors = None

        async def save_cursors(conn: Connection) -> None:
            await store_connections.save_cursors(
                conn, account.connection_id, fetched.cursors, now=now
            )

        async def store(conn: Connection) -> list[tuple[str, str]]:
            result = await ingest_signals(
                conn, account.user_id, fetched.signals, now=now,
                connection_id=account.connection_id,
            )
            await save_cursors(conn)
            return result.new_keys

        new_keys: list[tuple[str, str]] = []
        if fetched.signals:
            new_keys = await transaction(self.pool, store)
        elif write_cursors:
            # No signal to store with them: saving the cursors is one statement, atomic
            # on its own, so a quiet cycle skips the BEGIN and COMMIT round trips.
            await one_statement(self.pool, save_cursors)
        # (Otherwise nothing moved: the usual quiet cycle writes nothing.)
        status.cursors = {**previous, **fetched.cursors}
        if write_cursors:
            status.cursors_saved_at = started
        for name in fetched.cursors:
            status.connector_success_at[name] = now
        new = len(new_keys)
        status.signals_new += new
        for source, count in _count_by_source(new_keys).items():
            for hook in self.signal_hooks:
                hook(source, count)
        if new:
            log.info("skytwin.signals_ingested", new=new, connectors=sorted(fetched.cursors))

    async def _failed(
        self, account: Account, status: AccountStatus, exc: ConnectorError, fetched: Fetched
    ) -> None:
        status.cycles_failed += 1
        self._note_error(status, describe_error(exc))
        if isinstance(exc, NeedsReauthorization):
            status.needs_reauth = True
            log.warning("skytwin.account_needs_reauthorization", reason=exc.reason)
        else:
            log.warning(
                "skytwin.poll_failed",
                error_type=type(exc).__name__,
                error=describe_error(exc),
                breaker=status.breaker.state.value,
            )
        try:
            async with self.pool.connection() as conn:
                for connector, error in fetched.errors.items():
                    await store_connections.record_connector_error(
                        conn,
                        account.connection_id,
                        connector,
                        describe_error(error),
                        now=self.now(),
                    )
        except StoreError:
            pass  # the status record in memory still has it

    def _note_error(self, status: AccountStatus, message: str) -> None:
        status.last_error = message
        status.last_error_at = self.now()


def _count_by_source(new_keys: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for source, _ in new_keys:
        counts[source] = counts.get(source, 0) + 1
    return counts


def _is_cancellation(exc: BaseException | None) -> bool:
    """True for trio.Cancelled, alone or in a group made only of it."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return False


def _blocked_until(breaker: Breaker) -> float | None:
    """The trio time until which ``breaker`` refuses permits, or None if it admits now."""
    snapshot = breaker.snapshot()
    if snapshot.state in (BreakerState.CLOSED, BreakerState.DISABLED):
        return None
    now = trio.current_time()
    if snapshot.state is BreakerState.FORCED_OPEN:
        return now + 60.0  # look again in a minute; an operator holds it open
    if snapshot.next_probe_at is not None and snapshot.next_probe_at > now:
        return snapshot.next_probe_at
    if snapshot.state is BreakerState.HALF_OPEN and snapshot.probes_in_flight > 0:
        return now + 1.0
    return None


async def _stopped_before(deadline: float, stop: trio.Event) -> bool:
    """Sleep until ``deadline``; True if a stop was requested first."""
    with trio.move_on_at(deadline):
        await stop.wait()
    return stop.is_set()
