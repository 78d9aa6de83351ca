"""The execution outbox worker: carries out approved actions at most once.

::

    claim (FOR UPDATE SKIP LOCKED; attempt recorded and committed)
      → check policy again → carry out through the connector (retry + breaker)
      → record status and result in one transaction

A process killed between claim and result leaves the execution ``running``.
At the next start ``recover`` asks Google whether the effect is already there
before anything is repeated; actions SkyTwin has are idempotent at Google
(label changes, an attendee's own answer), and the check keeps even those from
being sent twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
import trio

from ..connectors.errors import (
    ActionNotApplicable,
    ConnectorError,
    NeedsReauthorization,
    PermanentApiError,
)
from ..nursery import CircuitOpenError, stop_requested
from ..nursery.events import describe_error
from ..store import Pool, StoreError, transaction
from ..store import approvals as store
from ..store.connections import Account, user_accounts
from ..store.pool import Connection
from .actions import PolicyViolation, carry_out, check_params, verify_done
from .poller import Poller

log = structlog.get_logger("skytwin.executor")

MAX_ATTEMPTS = 8
# A deferred execution waits 30 s, 60 s, … up to 20 min: an outage is not hammered.
DEFER_BASE_S = 30.0
DEFER_CAP_S = 1200.0


class Executor:
    """Runs pending executions one at a time; wakes on a kick or every ``poll_s``."""

    def __init__(
        self,
        pool: Pool,
        poller: Poller,
        *,
        poll_s: float = 5.0,
        hourly_limit: int = 100,
        on_finished: Callable[[int], None] = lambda execution_id: None,
        kicked: Callable[[], trio.Event] | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.pool = pool
        self.poller = poller
        self.google = poller.google
        self.poll_s = poll_s
        self.hourly_limit = hourly_limit
        self.on_finished = on_finished
        self.kicked = kicked or trio.Event
        # The poller's wall clock unless told otherwise: claims, not_before and the
        # hourly limit compare against times the pipeline wrote with that clock.
        self.now = now or poller.now

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover interrupted executions, then work the outbox until asked to stop."""
        stop = stop_requested()
        # Ready before recovery: recovery asks Google, which may hang for minutes, and
        # the process (its web server included) must not wait for that to come up.
        task_status.started()
        await self.recover()
        while not stop.is_set():
            kick = self.kicked()
            try:
                worked = await self.run_one()
            except StoreError as exc:
                log.warning("skytwin.executor_database_error", error=str(exc))
                worked = False
            if worked:
                continue
            with trio.move_on_after(self.poll_s):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_set_when, stop, nursery.cancel_scope)
                    nursery.start_soon(_set_when, kick, nursery.cancel_scope)

    async def recover(self) -> int:
        """Settle executions left ``running`` by a process that died; return how many."""
        async with self.pool.connection() as conn:
            interrupted = await store.interrupted_executions(conn)
        for execution in interrupted:
            await self._recover_one(execution)
        return len(interrupted)

    async def _recover_one(self, execution: store.Execution) -> None:
        account = await self._account(execution)
        done: bool | None = None
        if account is not None:
            try:
                done = await verify_done(
                    self.google,
                    self.google.tokens(account.connection_id),
                    execution.action,
                    execution.params,
                )
            except ConnectorError as exc:
                log.warning(
                    "skytwin.execution_verify_failed",
                    execution_id=execution.id,
                    error=describe_error(exc),
                )
        now = self.now()
        async with self.pool.connection() as conn:
            if done:
                await store.finish_execution(
                    conn,
                    execution.id,
                    succeeded=True,
                    result={"recovered": True, "note": "effect found in place after a restart"},
                    now=now,
                )
                self.on_finished(execution.id)
            else:
                # Not done (or unknown, for actions whose repeat is a no-op at Google):
                # hand it back to the queue; the attempt count keeps the history.
                await conn.execute(
                    "update executions set status = 'pending', updated_at = %s "
                    "where id = %s and status = 'running'",
                    (now, execution.id),
                )
        log.info("skytwin.execution_recovered", execution_id=execution.id, already_done=bool(done))

    async def run_one(self) -> bool:
        """Claim and carry out one execution; False when the outbox is empty."""
        now = self.now()
        execution = await transaction(self.pool, lambda conn: store.claim_execution(conn, now=now))
        if execution is None:
            return False
        with structlog.contextvars.bound_contextvars(user_id=execution.user_id):
            succeeded, result, error, retry = await self._attempt(execution)
            async with self.pool.connection() as conn:
                if retry and execution.attempts < MAX_ATTEMPTS:
                    delay = min(DEFER_CAP_S, DEFER_BASE_S * 2 ** (execution.attempts - 1))
                    await store.defer_execution(
                        conn, execution.id, error=error or "", delay_s=delay, now=self.now()
                    )
                    log.warning(
                        "skytwin.execution_deferred",
                        execution_id=execution.id,
                        error=error,
                        retry_in_s=delay,
                    )
                    return True  # others may be ready; this one waits for its not_before
                await store.finish_execution(
                    conn,
                    execution.id,
                    succeeded=succeeded,
                    result=result,
                    error=error,
                    now=self.now(),
                )
            log.info(
                "skytwin.execution_finished",
                execution_id=execution.id,
                action=execution.action,
                succeeded=succeeded,
                error=error,
            )
            self.on_finished(execution.id)
        return True

    async def _attempt(
        self, execution: store.Execution
    ) -> tuple[bool, dict[str, Any] | None, str | None, bool]:
        """(succeeded, result, error, worth retrying later)."""
        try:
            check_params(execution.action, execution.params)
            account = await self._account(execution)
            if account is None:
                raise PolicyViolation("the user has no active Google connection")
            async with self.pool.connection() as conn:
                await self._check_policy(conn, execution)
            breaker = self.poller.status_for(account).breaker
            async with breaker.permit():
                result = await carry_out(
                    self.google,
                    self.google.tokens(account.connection_id),
                    execution.action,
                    execution.params,
                )
            return True, result, None, False
        except PolicyViolation as exc:
            return False, None, f"refused by policy: {exc}", False
        except (NeedsReauthorization, PermanentApiError, ActionNotApplicable) as exc:
            return False, None, describe_error(exc), False
        except (CircuitOpenError, ConnectorError) as exc:
            return False, None, describe_error(exc), True

    async def _check_policy(self, conn: Connection, execution: store.Execution) -> None:
        """Limits and the user's own rules, checked again right before acting."""
        cur = await conn.execute(
            """
            select count(*) as n from executions
            where user_id = %s and attempted_at > %s and id <> %s
            """,
            (execution.user_id, self.now() - timedelta(hours=1), execution.id),
        )
        row = await cur.fetchone()
        if row is not None and row["n"] >= self.hourly_limit:
            raise PolicyViolation(f"more than {self.hourly_limit} actions in the last hour")
        cur = await conn.execute(
            """
            select u.settings, s.data from executions e
            join users u on u.id = e.user_id
            join decisions d on d.id = e.decision_id
            join signals s on s.id = d.signal_id
            where e.id = %s
            """,
            (execution.id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise PolicyViolation("the execution's decision is gone")
        protected = {str(d).lower() for d in row["settings"].get("protected_domains", [])}
        sender = str(row["data"].get("from", "")).lower()
        domain = sender.rsplit("@", 1)[-1].strip(" >") if "@" in sender else ""
        if domain and domain in protected:
            raise PolicyViolation(f"mail from {domain} is protected by the user's settings")

    async def _account(self, execution: store.Execution) -> Account | None:
        """The active account the execution's signal came from.

        A signal posted through the ingest API names no account: then the user's
        only active account, and none if there are several (never a guess).
        """
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                """
                select s.connection_id from executions e
                join decisions d on d.id = e.decision_id
                join signals s on s.id = d.signal_id
                where e.id = %s
                """,
                (execution.id,),
            )
            row = await cur.fetchone()
            accounts = [
                a for a in await user_accounts(conn, execution.user_id) if a.status == "active"
            ]
        wanted = row["connection_id"] if row else None
        if wanted is not None:
            return next((a for a in accounts if a.connection_id == wanted), None)
        return accounts[0] if len(accounts) == 1 else None


async def _set_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
