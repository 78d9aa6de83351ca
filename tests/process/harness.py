"""Run ``python -m skytwin`` as a real subprocess and talk to it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@dataclass
class SkyTwinProcess:
    """A running SkyTwin with its structured log lines collected."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    base_url: str = ""

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.events.put(event)

    def wait_event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """Block until the process logs ``name``; fail with its log if it exits first."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name} within {timeout} s; log:\n{''.join(self.lines)}")
            try:
                event = self.events.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    raise AssertionError(
                        f"exited {self.proc.returncode} before {name}; log:\n{''.join(self.lines)}"
                    ) from None
                continue
            if event.get("event") == name:
                return event

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        """GET ``path`` from the running process."""
        return httpx.get(self.base_url + path, timeout=timeout)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to the process."""
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        """Wait for exit; kill and fail if it takes longer than ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"did not exit within {timeout} s; log:\n{''.join(self.lines)}"
            ) from None

    def stop(self) -> None:
        """Make sure the process is gone (test cleanup)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_skytwin(
    home: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    wait_started: bool = True,
) -> SkyTwinProcess:
    """Start ``python -m skytwin ARGS`` on a free port with JSON logs."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SKYTWIN_")}
    full_env.update(
        {
            "SKYTWIN_HOME": str(home),
            "SKYTWIN_BIND": "127.0.0.1:0",
            "SKYTWIN_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "skytwin", *args],
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    st = SkyTwinProcess(proc)
    threading.Thread(target=st._pump, daemon=True).start()
    if wait_started:
        started = st.wait_event("skytwin.started", timeout=60)
        st.base_url = started["binds"][0]
    return st


def pids_with_cmdline(fragment: str) -> list[int]:
    """Pids of live processes whose command line contains ``fragment``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if fragment in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def cli(home: Path, env: Mapping[str, str], *args: str) -> str:
    """Run a one-shot ``python -m skytwin`` command; return its stdout (fail on non-zero)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SKYTWIN_")}
    full_env.update({"SKYTWIN_HOME": str(home), **env})
    result = subprocess.run(
        [sys.executable, "-m", "skytwin", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
