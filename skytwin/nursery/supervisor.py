"""An OTP-style supervisor on a Trio nursery: restart crashed children with backoff.

Shape: ``Supervisor.run()`` owns one nursery. Each *group* of children has a runner
task that starts its members in order, watches them, and restarts them after a
jittered exponential backoff. Under ``ONE_FOR_ONE`` every child is its own group;
under ``ONE_FOR_ALL`` all children form one group, so one crash stops the others
(in reverse start order, each with its grace period) and restarts them all.

What must stay true:

- Restart intensity is counted per group: per child under ONE_FOR_ONE, so one user's
  crashing task can never use up another user's restarts (OTP counts per supervisor,
  which would break that isolation); per supervisor under ONE_FOR_ALL.
- A stop is graceful first: ``stop_requested()`` is set, the child has its grace
  period to return, then it is cancelled. A deliberately stopped child is never
  restarted, whatever it raised on the way out.
- Children inherit the ``contextvars`` of the task that called ``start_child`` (so
  ``structlog.contextvars`` fields like ``user_id`` follow them), on every restart.
- Cancellation of ``run()`` from outside is a hard stop: every child is cancelled.
"""

from __future__ import annotations

import contextvars
import enum
import itertools
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from skytwin.nursery.errors import SupervisorEscalation
from skytwin.nursery.events import (
    ChildGivenUp,
    ChildRestarted,
    ChildStarted,
    ChildStopped,
    SupervisorEscalated,
    describe_error,
    emit,
)
from skytwin.nursery.retry import RetryPolicy, backoff_delay
from skytwin.nursery.states import ChildState

__all__ = [
    "DEFAULT_RESTART_BACKOFF",
    "ChildSnapshot",
    "ChildState",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorSnapshot",
    "stop_requested",
]

ChildFn = Callable[..., Awaitable[None]]

# Only base_delay_s, cap_s and jitter matter here; restart intensity bounds the count.
DEFAULT_RESTART_BACKOFF = RetryPolicy(attempts=1, base_delay_s=1.0, cap_s=30.0, jitter="full")

_STARTING = ChildState.STARTING
_RUNNING = ChildState.RUNNING
_BACKING_OFF = ChildState.BACKING_OFF
_FAILED = ChildState.FAILED
_STOPPED = ChildState.STOPPED
_FINAL = (_FAILED, _STOPPED)


class Restart(enum.Enum):
    """When a child is restarted: always, only after a crash, or never."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """Restart only the crashed child, or all children together."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"


_STOP_EVENT: contextvars.ContextVar[trio.Event] = contextvars.ContextVar("skytwin_nursery_stop")


def _start_soon_in(
    context: contextvars.Context,
    nursery: trio.Nursery,
    async_fn: Callable[..., Awaitable[object]],
    *args: object,
    name: str,
) -> None:
    """``nursery.start_soon`` whose task copies ``context`` rather than the caller's.

    Trio copies the *current* context when it spawns, so spawning inside
    ``context.run`` hands the new task a copy of ``context``.
    """

    def spawn() -> None:
        """Spawn from inside ``context`` (run by ``context.run``)."""
        nursery.start_soon(async_fn, *args, name=name)

    context.run(spawn)


def stop_requested() -> trio.Event:
    """Inside a supervised child: the event set when the supervisor asks it to stop gracefully.

    Outside a supervised child this returns a fresh event that is never set, so the
    same code runs unsupervised in tests.
    """
    try:
        return _STOP_EVENT.get()
    except LookupError:
        return trio.Event()


# ---- snapshots ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildSnapshot:
    """One child at one moment; ``since`` is the trio time of its last state change."""

    name: str
    state: ChildState
    restarts: int
    last_error: str | None
    since: float
    restart: Restart
    last_error_type: str | None


@dataclass(frozen=True, slots=True)
class SupervisorSnapshot:
    """A supervisor and its children (in start order) at one moment."""

    name: str
    strategy: Strategy
    running: bool
    escalated: bool
    given_up_children: tuple[str, ...]
    children: tuple[ChildSnapshot, ...]

    @property
    def failed(self) -> bool:
        """True when a child was given up or the supervisor escalated."""
        return self.escalated or bool(self.given_up_children)


# ---- internal records --------------------------------------------------------


class _Incarnation:
    """One life of a child, from spawn to return, crash or stop."""

    __slots__ = ("done", "ended", "outcome", "round", "scope", "started", "stop", "stopping")

    def __init__(self, round_: int) -> None:
        self.round = round_
        self.scope = trio.CancelScope()
        self.stop = trio.Event()  # what stop_requested() returns inside the child
        self.done = trio.Event()
        self.started = False
        self.ended = False
        self.stopping = False  # stopped on purpose: its exit decides nothing
        self.outcome: Exception | None = None


class _Group:
    """Children that live and restart together, with their restart history."""

    __slots__ = ("changed", "done", "members", "previous_delay", "restart_times", "round", "scope")

    def __init__(self) -> None:
        self.members: list[_Child] = []
        self.restart_times: deque[float] = deque()
        self.previous_delay: float | None = None
        self.round = 0
        self.changed = trio.Event()
        self.scope = trio.CancelScope()
        self.done = trio.Event()

    def poke(self) -> None:
        """Wake the group's runner to look at its members again."""
        self.changed.set()


class _Child:
    __slots__ = (
        "context",
        "ever_started",
        "first_error",
        "first_start",
        "fn",
        "grace_s",
        "group",
        "inc",
        "last_error",
        "last_error_type",
        "name",
        "order",
        "removing",
        "restart",
        "restarts",
        "since",
        "state",
    )

    def __init__(
        self,
        name: str,
        fn: ChildFn,
        restart: Restart,
        grace_s: float,
        group: _Group,
        order: int,
    ) -> None:
        self.name = name
        self.fn = fn
        self.restart = restart
        self.grace_s = grace_s
        self.group = group
        self.order = order
        # Captured once: every incarnation is spawned inside a copy of it.
        self.context = contextvars.copy_context()
        self.state = _STARTING
        self.since = trio.current_time()
        self.restarts = 0
        self.last_error: str | None = None
        self.last_error_type: str | None = None
        self.ever_started = False
        self.removing = False
        self.inc: _Incarnation | None = None
        self.first_start = trio.Event()
        self.first_error: BaseException | None = None

    def set_state(self, state: ChildState) -> None:
        """Move to ``state`` and note when."""
        self.state = state
        self.since = trio.current_time()


class _ChildStatus:
    """The ``task_status`` a child receives; ``started()`` marks it running."""

    __slots__ = ("_child", "_inc", "_supervisor")

    def __init__(self, supervisor: Supervisor, child: _Child, inc: _Incarnation) -> None:
        self._supervisor = supervisor
        self._child = child
        self._inc = inc

    def started(self, value: object = None) -> None:
        """Report the child ready (the value is ignored)."""
        inc, child = self._inc, self._child
        if inc.started:
            raise RuntimeError("task_status.started() called twice")
        inc.started = True
        child.ever_started = True
        child.set_state(_RUNNING)
        emit(ChildStarted(self._supervisor.name, child.name, child.restarts))
        child.first_start.set()
        child.group.poke()


# ---- the supervisor ----------------------------------------------------------


class Supervisor:
    """Runs children in its own nursery and restarts them per OTP rules."""

    def __init__(
        self,
        name: str,
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 5,
        window_s: float = 60.0,
        backoff: RetryPolicy = DEFAULT_RESTART_BACKOFF,
        escalate: bool = False,
        shutdown_grace_s: float = 5.0,
        parallel_shutdown: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        if max_restarts < 0 or window_s <= 0 or shutdown_grace_s < 0:
            raise ValueError("need max_restarts >= 0, window_s > 0, shutdown_grace_s >= 0")
        self.name = name
        self._strategy = strategy
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._backoff = backoff
        self._escalate = escalate
        self._grace_s = shutdown_grace_s
        # Sequential (OTP): each child is asked to stop only once the later one is
        # gone. Parallel: all are asked at once (still in reverse order), and each
        # gets its own grace from that moment; for many independent peers (users),
        # where N children times the grace would outlast any shutdown deadline.
        self._parallel_shutdown = parallel_shutdown
        self._rng = rng
        self._children: dict[str, _Child] = {}
        self._order = itertools.count()
        self._nursery: trio.Nursery | None = None
        self._shared: _Group | None = None  # the one group under ONE_FOR_ALL
        self._stopping = False
        self._stop_requested = trio.Event()
        self._finished = trio.Event()
        self._escalation: SupervisorEscalation | None = None

    # ---- public API ----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise until ``shutdown()``, outside cancellation, or escalation (raised here)."""
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._children = {}
        self._stopping = False
        self._escalation = None
        self._stop_requested = trio.Event()
        self._finished = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._strategy is Strategy.ONE_FOR_ALL:
                    self._shared = _Group()
                    nursery.start_soon(self._run_group, self._shared, name=f"{self.name}/group")
                task_status.started()
                await self._stop_requested.wait()
                await self._stop_all()
                nursery.cancel_scope.cancel()  # runners still sleeping in a backoff
        finally:
            self._nursery = None
            self._stopping = True
            for child in self._children.values():
                if child.state not in _FINAL:
                    self._finish(child, _STOPPED, "cancelled")
            self._finished.set()
        if self._escalation is not None:
            raise self._escalation

    async def start_child(
        self,
        name: str,
        fn: ChildFn,
        *,
        restart: Restart = Restart.PERMANENT,
        shutdown_grace_s: float | None = None,
    ) -> None:
        """Start ``fn(task_status=...)`` as a child; returns once it called ``started()``.

        Raises the child's own exception if its first start crashes (it is then not
        kept), ``ValueError`` if a live child has that name (a stopped or failed one is
        replaced), ``RuntimeError`` if the supervisor is not running.
        """
        nursery = self._nursery
        if nursery is None or self._stopping:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        existing = self._children.get(name)
        if existing is not None:
            if existing.state not in _FINAL:
                raise ValueError(f"supervisor {self.name!r} already has a child {name!r}")
            del self._children[name]
        group = self._shared if self._shared is not None else _Group()
        grace_s = self._grace_s if shutdown_grace_s is None else shutdown_grace_s
        child = _Child(name, fn, restart, grace_s, group, next(self._order))
        self._children[name] = child
        group.members.append(child)
        if self._shared is None:
            _start_soon_in(
                child.context, nursery, self._run_group, group, name=f"{self.name}/{name}"
            )
        else:
            group.poke()
        try:
            await child.first_start.wait()
        except BaseException:
            self._abandon(child)  # our caller gave up waiting: leave nothing half-started
            raise
        if child.first_error is not None:
            error, child.first_error = child.first_error, None
            raise error

    async def remove_child(self, name: str) -> None:
        """Stop a child gracefully (grace, then cancel) and forget it; KeyError if unknown."""
        child = self._children[name]
        child.removing = True
        try:
            await self._stop_incarnation(child)
        finally:
            if self._children.get(name) is child:
                del self._children[name]
            self._detach(child)
            if child.group is not self._shared:
                child.group.scope.cancel()  # its runner may be sleeping in a backoff
        if child.state not in _FINAL:
            self._finish(child, _STOPPED, "removed")
        if child.group is not self._shared:
            await child.group.done.wait()

    def has_child(self, name: str) -> bool:
        """True if ``name`` is a child (live, or stopped/failed and not yet removed)."""
        return name in self._children

    def child_names(self) -> list[str]:
        """Children's names in start order."""
        return [c.name for c in sorted(self._children.values(), key=lambda c: c.order)]

    async def shutdown(self) -> None:
        """Stop children in reverse start order, each with its grace; returns when run() ends.

        With ``parallel_shutdown`` every child is asked at once and the whole
        shutdown takes at most one grace period.
        """
        if self._nursery is None:
            return
        self._request_stop()
        await self._finished.wait()

    @property
    def running(self) -> bool:
        """True while the supervisor runs and is not shutting down (cheap: no snapshot)."""
        return self._nursery is not None and not self._stopping

    @property
    def escalated(self) -> bool:
        """True once the supervisor gave up as a whole (cheap: no snapshot)."""
        return self._escalation is not None

    def snapshot(self) -> SupervisorSnapshot:
        """A frozen view of every child: state, restarts, last error, since when."""
        children = tuple(
            ChildSnapshot(
                name=c.name,
                state=c.state,
                restarts=c.restarts,
                last_error=c.last_error,
                since=c.since,
                restart=c.restart,
                last_error_type=c.last_error_type,
            )
            for c in sorted(self._children.values(), key=lambda c: c.order)
        )
        return SupervisorSnapshot(
            name=self.name,
            strategy=self._strategy,
            running=self.running,
            escalated=self.escalated,
            given_up_children=tuple(c.name for c in children if c.state is _FAILED),
            children=children,
        )

    # ---- group runner ----------------------------------------------------------

    async def _run_group(self, group: _Group) -> None:
        """Start the group's members, watch them, restart them; one task per group."""
        try:
            with group.scope:
                while not self._stopping:
                    if not group.members:
                        if group is not self._shared:
                            return
                        group.changed = trio.Event()
                        await group.changed.wait()
                        continue
                    trigger = await self._run_round(group)
                    if trigger is not None and not self._stopping:
                        await self._restart_or_give_up(group, *trigger)
        finally:
            group.done.set()

    async def _run_round(self, group: _Group) -> tuple[_Child, Exception | None] | None:
        """One life of the group; returns the member whose exit calls for a restart."""
        group.round += 1
        async with trio.open_nursery() as nursery:
            while not self._stopping:
                trigger = self._scan(group)
                if trigger is not None:
                    for other in reversed(group.members):
                        if other is not trigger[0]:
                            await self._stop_incarnation(other)
                    return trigger
                if not group.members:
                    return None
                self._spawn_next(group, nursery)
                group.changed = trio.Event()  # no checkpoint since the scan: no lost wake-up
                await group.changed.wait()
        return None

    def _spawn_next(self, group: _Group, nursery: trio.Nursery) -> None:
        """Spawn the first member not yet started this round, once all before it are ready."""
        for member in group.members:
            if member.removing:
                continue
            inc = member.inc
            if inc is None or inc.round != group.round:
                inc = member.inc = _Incarnation(group.round)
                member.set_state(_STARTING)
                _start_soon_in(
                    member.context,
                    nursery,
                    self._live,
                    member,
                    inc,
                    name=f"{self.name}/{member.name}",
                )
                return
            if not inc.started:
                return  # start in order: the next waits until this one is ready

    def _scan(self, group: _Group) -> tuple[_Child, Exception | None] | None:
        """Settle members whose incarnation ended; return one that needs a restart."""
        for member in list(group.members):
            inc = member.inc
            # Only this round's ends decide anything: earlier ones were settled already.
            if inc is None or inc.round != group.round or not inc.ended:
                continue
            if inc.stopping or member.removing:
                continue
            if not member.ever_started:
                # The first start failed: start_child raises it and the child never joined.
                member.first_error = inc.outcome or RuntimeError(
                    f"child {member.name!r} returned before calling task_status.started()"
                )
                self._detach(member)
                if self._children.get(member.name) is member:
                    del self._children[member.name]
                member.set_state(_STOPPED)
                member.first_start.set()
                continue
            error = inc.outcome
            if error is None and member.restart is not Restart.PERMANENT:
                self._finish(member, _STOPPED, "exited")
            elif error is not None and member.restart is Restart.TEMPORARY:
                self._finish(member, _FAILED, "crashed", error)
            else:
                return member, error
        return None

    async def _restart_or_give_up(
        self, group: _Group, child: _Child, error: Exception | None
    ) -> None:
        """Apply restart intensity, then back off and let the next round restart the group."""
        now = trio.current_time()
        window = group.restart_times
        while window and window[0] <= now - self._window_s:
            window.popleft()
        error_type = type(error).__name__ if error is not None else None
        error_text = describe_error(error) if error is not None else None
        if len(window) >= self._max_restarts:
            child.set_state(_FAILED)
            self._detach(child)
            emit(ChildGivenUp(self.name, child.name, child.restarts, error_type, error_text))
            if self._escalate:
                emit(SupervisorEscalated(self.name, child.name, error_type, error_text))
                escalation = SupervisorEscalation(self.name, child.name, error_text)
                escalation.__cause__ = error
                self._escalation = escalation
                self._request_stop()
                return
            # ONE_FOR_ALL: the group lives and dies together; its others are already stopped.
            for other in list(group.members):
                self._finish(other, _STOPPED, "group_given_up")
            return
        window.append(now)
        delay = backoff_delay(
            self._backoff, len(window), previous_s=group.previous_delay, rng=self._rng
        )
        group.previous_delay = delay
        for member in list(group.members):
            if member is not child and member.restart is Restart.TEMPORARY:
                self._finish(member, _STOPPED, "sibling_restart")  # OTP: never restarted
                continue
            member.restarts += 1
            member.set_state(_BACKING_OFF)
            emit(
                ChildRestarted(
                    self.name,
                    member.name,
                    member.restarts,
                    delay,
                    error_type,
                    error_text,
                    child.name,
                )
            )
        await trio.sleep(delay)

    # ---- one incarnation -------------------------------------------------------

    async def _live(self, child: _Child, inc: _Incarnation) -> None:
        """Run one incarnation of ``child``; record how it ended, never raise its error."""
        _STOP_EVENT.set(inc.stop)
        try:
            with inc.scope:
                await child.fn(task_status=_ChildStatus(self, child, inc))
        except Exception as exc:
            inc.outcome = exc
            child.last_error = describe_error(exc)
            child.last_error_type = type(exc).__name__
        finally:
            inc.ended = True
            inc.done.set()
            child.group.poke()

    async def _stop_incarnation(self, child: _Child) -> None:
        """Ask the running incarnation to stop; cancel it after its grace; wait until it ended."""
        inc = child.inc
        if inc is None or inc.ended:
            return
        inc.stopping = True
        inc.stop.set()
        try:
            with trio.move_on_after(child.grace_s):
                await inc.done.wait()
        finally:
            if not inc.ended:
                inc.scope.cancel()
        await inc.done.wait()

    # ---- bookkeeping -----------------------------------------------------------

    async def _stop_all(self) -> None:
        """Stop every live child in reverse start order, each with its grace period."""
        live = [
            child
            for child in sorted(self._children.values(), key=lambda c: c.order, reverse=True)
            if child.state not in _FINAL
        ]
        if not self._parallel_shutdown:
            for child in live:
                await self._stop_child(child)
            return
        for child in live:  # every stop request goes out now, latest child first
            inc = child.inc
            if inc is not None and not inc.ended:
                inc.stopping = True
                inc.stop.set()
        async with trio.open_nursery() as nursery:
            for child in live:
                nursery.start_soon(self._stop_child, child)

    async def _stop_child(self, child: _Child) -> None:
        child.removing = True
        await self._stop_incarnation(child)
        self._finish(child, _STOPPED, "shutdown")

    def _finish(
        self, child: _Child, state: ChildState, reason: str, error: Exception | None = None
    ) -> None:
        """Put a child in its final state, out of its group; unblock a pending start_child."""
        self._detach(child)
        child.set_state(state)
        if not child.first_start.is_set():
            child.first_error = RuntimeError(f"child {child.name!r} stopped before it started")
            child.first_start.set()
        emit(
            ChildStopped(
                self.name,
                child.name,
                reason,
                type(error).__name__ if error is not None else None,
                describe_error(error) if error is not None else None,
            )
        )

    def _abandon(self, child: _Child) -> None:
        """Drop a child whose start_child caller was cancelled; cancel it without waiting."""
        child.removing = True
        if child.inc is not None:
            child.inc.stopping = True
            child.inc.scope.cancel()
        self._detach(child)
        if self._children.get(child.name) is child:
            del self._children[child.name]
        if child.group is not self._shared:
            child.group.scope.cancel()
        child.set_state(_STOPPED)

    @staticmethod
    def _detach(child: _Child) -> None:
        members = child.group.members
        if child in members:
            members.remove(child)
        child.group.poke()

    def _request_stop(self) -> None:
        self._stopping = True
        self._stop_requested.set()
        for child in self._children.values():
            child.group.poke()

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self._strategy.value} children={len(self._children)}>"
