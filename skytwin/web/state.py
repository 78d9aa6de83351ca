"""What the web app reads: built in ``skytwin.app`` and handed to ``create_app``."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..config import Settings
from ..store import Pool


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One named readiness check: ok, or the reason it is not."""

    ok: bool
    detail: str | None = None


ReadinessCheck = Callable[[], Awaitable[CheckResult]]


@dataclass(slots=True)
class WebState:
    """Services shared with request handlers (no globals, no import-time setup)."""

    settings: Settings
    pool: Pool
    started_at: float = field(default_factory=trio.current_time)
    started_wall: float = field(default_factory=time.time)
    # Later components (supervisors, …) add checks here; each must be quick.
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    cipher: Any = None  # TokenCipher: seals OAuth tokens and PKCE verifiers
    google: Any = None  # Google: the shared client, for connecting accounts
    metrics: Any = None  # Metrics: /metrics renders it, request counting feeds it
    poller: Any = None  # Poller: per-account status for the dashboard
    supervisors: list[Any] = field(default_factory=list)

    # The executor's wake-up and completion signals (set by skytwin.app when it runs one).
    executor_kick: trio.Event = field(default_factory=trio.Event)
    # How long POST /respond waits for an approved action before answering 202.
    respond_wait_s: float = 3.0
    finished: dict[int, trio.Event] = field(default_factory=dict)

    def kick_executor(self) -> None:
        """Tell the executor there is new work (it also polls, so this is only a hint)."""
        self.executor_kick.set()
        self.executor_kick = trio.Event()

    def report_finished(self, execution_id: int) -> None:
        """Called by the executor when an execution's outcome is committed."""
        self.finished.pop(execution_id, trio.Event()).set()

    def uptime_s(self) -> float:
        """Seconds since the process started serving."""
        return round(trio.current_time() - self.started_at, 3)


def current_state() -> WebState:
    """The WebState of the app serving the current request."""
    from quart import current_app

    state: WebState = current_app.config["SKYTWIN"]
    return state
