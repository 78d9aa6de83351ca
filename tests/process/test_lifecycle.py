"""The real process: start on the embedded default, SIGTERM, database outages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skytwin.store.embedded import postmaster_pid
from tests.conftest import PgServer

from .harness import pids_with_cmdline, start_skytwin, wait_for

pytestmark = pytest.mark.slow


def test_embedded_default_serves_health_and_sigterm_stops_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    st = start_skytwin(home)
    try:
        assert st.get("/api/health/live").status_code == 200
        ready = st.get("/api/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "housekeeping": "ok", "users": "ok"}
        pg_pid = postmaster_pid(home)
        assert pg_pid is not None

        st.signal(signal.SIGTERM)
        started = time.monotonic()
        assert st.wait_exit(timeout=10) == 0
        assert time.monotonic() - started < 10
        assert postmaster_pid(home) is None
        assert pids_with_cmdline(str(home / "pgdata")) == []
        st.wait_event("skytwin.stopped", timeout=1)
    finally:
        st.stop()


def test_second_start_reuses_the_embedded_cluster(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_skytwin(home)
    first.signal(signal.SIGTERM)
    assert first.wait_exit(timeout=10) == 0
    second = start_skytwin(home)
    try:
        # Migrations were applied by the first run: nothing new to apply.
        assert not any("skytwin.migration_applied" in line for line in second.lines)
        assert second.get("/api/health/ready").status_code == 200
    finally:
        second.stop()


def test_two_processes_cannot_share_a_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_skytwin(home)
    try:
        second = start_skytwin(home, wait_started=False)
        assert second.wait_exit(timeout=10) == 1
        fatal = second.wait_event("skytwin.fatal", timeout=1)
        assert "another SkyTwin process is running" in fatal["error"]
    finally:
        first.stop()


def _server_pids(pg: PgServer) -> list[int]:
    pids = pids_with_cmdline(str(pg.pgdata))
    postmaster = int((pg.pgdata / "postmaster.pid").read_text().splitlines()[0])
    # Backends and workers don't carry the data directory in their command line.
    children = subprocess.run(
        ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
    ).stdout.split()
    return sorted({*pids, postmaster, *map(int, children)})


def _ready_status(st) -> int:
    try:
        return st.get("/api/health/ready", timeout=3).status_code
    except Exception:  # noqa: BLE001 - a hung probe counts as "not answered"
        return -1


def test_frozen_then_stopped_database_gives_quick_503_and_recovers(
    tmp_path: Path, own_server: PgServer
) -> None:
    st = start_skytwin(tmp_path / "home", env={"SKYTWIN_DATABASE_URL": own_server.url()})
    try:
        assert st.get("/api/health/ready").status_code == 200

        # Frozen: every PostgreSQL process stopped with SIGSTOP.
        frozen = _server_pids(own_server)
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = st.get("/api/health/ready", timeout=5)
            assert response.status_code == 503
            assert time.monotonic() - started < 2.0
            assert response.json()["checks"]["database"].startswith("failing")
            assert st.get("/api/health/live").status_code == 200
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        thawed = time.monotonic()
        wait_for(lambda: _ready_status(st) == 200, timeout=2.0)
        assert time.monotonic() - thawed < 2.0

        # Stopped: the server shut down cleanly, then started again.
        own_server.server.stop()
        started = time.monotonic()
        response = st.get("/api/health/ready", timeout=5)
        assert response.status_code == 503
        assert time.monotonic() - started < 2.0
        assert st.get("/api/health/live").status_code == 200
        own_server.server.start()
        back = time.monotonic()
        wait_for(lambda: _ready_status(st) == 200, timeout=2.0)
        assert time.monotonic() - back < 2.0
    finally:
        st.stop()
    assert st.proc.returncode == 0


def test_unknown_subcommand_prints_usage_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skytwin", "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage: python -m skytwin" in result.stderr
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_unknown_flag_prints_usage_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skytwin", "--frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage: python -m skytwin" in result.stderr


def test_bad_configuration_is_named_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "SKYTWIN_HOME": str(tmp_path), "SKYTWIN_BIND": "localhost:http"}
    result = subprocess.run(
        [sys.executable, "-m", "skytwin"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert "SKYTWIN_BIND has a bad port: 'http'" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_clear_fatal_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        st = start_skytwin(
            tmp_path / "home", env={"SKYTWIN_BIND": f"127.0.0.1:{port}"}, wait_started=False
        )
        assert st.wait_exit(timeout=30) == 1
    fatal = st.wait_event("skytwin.fatal", timeout=1)
    assert "Address already in use" in fatal["error"]
    assert fatal["hint"] == "the address in SKYTWIN_BIND is already in use"
    # It stopped the embedded database it had started.
    assert postmaster_pid(tmp_path / "home") is None
