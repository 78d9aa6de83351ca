"""The SkyTwin process: the whole nursery tree in one function.

::

    run(settings)
    └── database          embedded Postgres (if no URL) → pool → migrations
        └── root nursery
            ├── watch_signals      SIGINT/SIGTERM → graceful shutdown
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

import structlog
import trio

from .config import Settings
from .store import open_database
from .web import WebState, create_app, serve_web

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
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run SkyTwin until ``shutdown`` is set (by a signal or the caller)."""
    shutdown = shutdown or trio.Event()
    with trio.CancelScope() as everything:
        async with open_database(settings) as pool:
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_signals, shutdown, everything)

                state = WebState(settings=settings, pool=pool)
                web_done = trio.Event()
                binds = await nursery.start(
                    _permanent, "web", web_done, shutdown,
                    partial(serve_web, create_app(state), settings, shutdown.wait),
                )
                log.info("skytwin.started", binds=binds, embedded_db=settings.database_url is None)
                task_status.started(binds)

                await shutdown.wait()
                everything.deadline = trio.current_time() + SHUTDOWN_DEADLINE_S
                # Hypercorn stops through its shutdown trigger and gives in-flight
                # requests settings.shutdown_grace_s; we only bound the whole affair.
                with trio.move_on_after(settings.shutdown_grace_s + 1):
                    await web_done.wait()
                nursery.cancel_scope.cancel()
    log.info("skytwin.stopped")


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
