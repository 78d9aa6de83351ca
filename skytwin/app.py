"""The SkyTwin process: the whole nursery tree in one function.

::

    run(settings)
    └── database          embedded Postgres (if no URL) → pool → migrations
        └── google        one httpx client, per-API limits and retry budgets
            └── root nursery
                ├── watch_signals      SIGINT/SIGTERM → graceful shutdown
                ├── users              Supervisor: one poll loop per connected account
                ├── housekeeping       Supervisor: executor, expiry sweep, account discovery
                └── web                Hypercorn serving the Quart-Trio app

A second signal during shutdown cancels everything at once. A permanent
service that dies takes the process down with one ``skytwin.fatal`` log line
and a non-zero exit, so the restart policy of compose or systemd can act.
"""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import structlog
import trio

from .config import Settings
from .crypto import TokenCipher, load_or_create_key
from .metrics import Metrics
from .nursery import Supervisor, add_hook, install_structlog_hook
from .pipeline.executor import Executor
from .pipeline.google import open_google
from .pipeline.housekeeping import run_discovery, run_expiry_sweep
from .pipeline.poller import Poller, PollSettings
from .store import open_database
from .store.connections import PgTokenRepository
from .web import CheckResult, WebState, create_app, serve_web
from .web.state import ReadinessCheck

log = structlog.get_logger("skytwin.app")

# Everything must be down within this many seconds of the first signal.
SHUTDOWN_DEADLINE_S = 9.0


class AlreadyRunning(RuntimeError):
    """Another SkyTwin process holds this SKYTWIN_HOME."""


@contextmanager
def home_lock(home: Path, *, required: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on ``home`` so two services never share its database.

    Yields True when this process holds the lock. With ``required=False`` a
    lock held elsewhere (the service is running) yields False instead of
    raising: CLI commands then attach to the running service's database.
    """
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "skytwin.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if required:
                raise AlreadyRunning(
                    f"another SkyTwin process is running with SKYTWIN_HOME={home}"
                ) from None
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)


async def watch_signals(
    shutdown: trio.Event,
    cancel_all: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """First SIGINT/SIGTERM: graceful shutdown. Second: cancel everything now."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if not shutdown.is_set():
                log.info("skytwin.shutdown_requested", signal=signal.Signals(signum).name)
                shutdown.set()
            else:
                log.warning("skytwin.shutdown_forced", signal=signal.Signals(signum).name)
                cancel_all.cancel()


async def run(
    settings: Settings,
    *,
    shutdown: trio.Event | None = None,
    google_transport: httpx.AsyncBaseTransport | None = None,
    poll: PollSettings | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run SkyTwin until ``shutdown`` is set (by a signal or the caller)."""
    if shutdown is None:
        shutdown = trio.Event()
    cipher = TokenCipher(load_or_create_key(settings.home, settings.secret_key))
    metrics = Metrics()
    with (
        _hooks(install_structlog_hook(), add_hook(metrics.on_event)),
        trio.CancelScope() as everything,
    ):
        async with (
            open_database(settings) as pool,
            open_google(
                settings, PgTokenRepository(pool, cipher), transport=google_transport
            ) as google,
        ):
            poller = Poller(pool, google, poll or PollSettings(interval_s=settings.poll_interval_s))
            users = Supervisor(
                "users", shutdown_grace_s=settings.shutdown_grace_s, parallel_shutdown=True
            )
            housekeeping = Supervisor("housekeeping", shutdown_grace_s=settings.shutdown_grace_s)
            poller.cycle_hooks.append(metrics.on_cycle)
            poller.signal_hooks.append(metrics.on_signals)
            metrics.watch(pool=pool, poller=poller, supervisors=[users, housekeeping])
            state = WebState(
                settings=settings,
                pool=pool,
                cipher=cipher,
                poller=poller,
                google=google,
                metrics=metrics,
                supervisors=[users, housekeeping],
            )
            state.checks.update(supervisor_checks(users, housekeeping))
            executor = Executor(
                pool, poller, on_finished=state.report_finished, kicked=lambda: state.executor_kick
            )

            async with trio.open_nursery() as nursery:
                await nursery.start(watch_signals, shutdown, everything)
                await nursery.start(users.run)
                await nursery.start(housekeeping.run)
                await housekeeping.start_child("executor", executor.run)
                await housekeeping.start_child("expiry-sweep", partial(run_expiry_sweep, pool))
                await housekeeping.start_child(
                    "discovery",
                    partial(
                        run_discovery, pool, poller, users, interval_s=settings.poll_interval_s
                    ),
                )
                web_done = trio.Event()
                binds = await nursery.start(
                    _permanent,
                    "web",
                    web_done,
                    shutdown,
                    partial(serve_web, create_app(state), settings, shutdown.wait),
                )
                log.info("skytwin.started", binds=binds, embedded_db=settings.database_url is None)
                task_status.started(binds)

                await shutdown.wait()
                everything.deadline = trio.current_time() + SHUTDOWN_DEADLINE_S
                # Web, housekeeping and the users' poll loops wind down side by side;
                # each bounds its own grace (Hypercorn's graceful_timeout, the
                # supervisors' shutdown_grace_s), SHUTDOWN_DEADLINE_S bounds them all.
                async with trio.open_nursery() as stopping:
                    stopping.start_soon(_stop_supervisors, housekeeping, users)
                    stopping.start_soon(web_done.wait)
                nursery.cancel_scope.cancel()
    log.info("skytwin.stopped")


@contextmanager
def _hooks(*removers: Callable[[], None]) -> Iterator[None]:
    """Keep instrumentation hooks installed for the block (one process may run twice)."""
    try:
        yield
    finally:
        for remove in removers:
            remove()


async def _stop_supervisors(housekeeping: Supervisor, users: Supervisor) -> None:
    """Housekeeping first (discovery would start new pollers), then the users."""
    await housekeeping.shutdown()
    await users.shutdown()


def supervisor_checks(*supervisors: Supervisor) -> dict[str, ReadinessCheck]:
    """Readiness checks: a supervisor that escalated (gave up as a whole) is not ready.

    One account's given-up task shows in its status, not here: one user's
    Google outage must not take the instance out of rotation.
    """

    def check_for(supervisor: Supervisor) -> ReadinessCheck:
        async def check() -> CheckResult:
            await trio.lowlevel.checkpoint()
            # Not snapshot(): with 10,000 children that copy would cost every probe.
            if supervisor.escalated:
                return CheckResult(False, "supervisor gave up")
            if not supervisor.running:
                return CheckResult(False, "supervisor not running")
            return CheckResult(True)

        return check

    return {s.name: check_for(s) for s in supervisors}


async def _permanent(
    name: str,
    done: trio.Event,
    shutdown: trio.Event,
    fn: Callable[..., Awaitable[None]],
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a service that must live as long as the process; returning early is a crash."""
    try:
        await fn(task_status=task_status)
    finally:
        done.set()
    if not shutdown.is_set():
        raise ServiceDied(f"the {name} service stopped unexpectedly")


class ServiceDied(RuntimeError):
    """A permanent service ended while SkyTwin was not shutting down."""
