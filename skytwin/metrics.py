"""Prometheus metrics: built per process (no global registry), fed by hooks.

Sources, all existing instrumentation points:

* ``skytwin.nursery`` events (retries, budget exhaustion, breaker transitions,
  supervisor restarts and give-ups) through ``nursery.add_hook``;
* the poller's cycle and ingest hooks (polls by result, cycle duration, signals);
* the web app's ``after_request`` (requests by route template and status);
* read at scrape time: breaker states, supervisor children, database pool.

Label sets are bounded: routes are URL *templates*, reasons and states are
enumerations, and per-account breaker series exist only for accounts whose
breaker is not closed, at most ``MAX_ACCOUNT_SERIES`` of them.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .nursery import (
    BreakerState,
    BreakerTransition,
    ChildGivenUp,
    ChildRestarted,
    RetryBudgetExhausted,
    RetryScheduled,
    Supervisor,
    SupervisorEscalated,
)

MAX_ACCOUNT_SERIES = 100
_STATE_VALUE = {
    BreakerState.CLOSED: 0,
    BreakerState.HALF_OPEN: 1,
    BreakerState.OPEN: 2,
    BreakerState.FORCED_OPEN: 3,
    BreakerState.DISABLED: 4,
}


_GOOGLE_SOURCES = frozenset({"gmail", "calendar"})


class Metrics:
    """Every SkyTwin metric, in its own registry."""

    def __init__(self) -> None:
        # *_created series double the output and carry nothing an operator uses.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = Counter("skytwin_polls", "Poll cycles by result", ["result"], registry=r)
        self.poll_seconds = Histogram(
            "skytwin_poll_cycle_seconds",
            "Duration of one account's poll cycle",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.signals = Counter(
            "skytwin_signals_ingested", "New signals stored", ["source"], registry=r
        )
        self.retries = Counter(
            "skytwin_retries_scheduled",
            "Retries scheduled by target API and reason",
            ["target", "reason"],
            registry=r,
        )
        self.budget_exhausted = Counter(
            "skytwin_retry_budget_exhausted",
            "Retries refused because the target's retry budget was spent",
            ["target"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "skytwin_breaker_transitions",
            "Circuit breaker transitions by new state",
            ["to_state"],
            registry=r,
        )
        self.restarts = Counter(
            "skytwin_supervisor_restarts",
            "Supervised children restarted",
            ["supervisor"],
            registry=r,
        )
        self.given_up = Counter(
            "skytwin_supervisor_given_up",
            "Supervised children given up (restart intensity)",
            ["supervisor"],
            registry=r,
        )
        self.escalations = Counter(
            "skytwin_supervisor_escalations",
            "Supervisors that escalated to their parent",
            ["supervisor"],
            registry=r,
        )
        self.http_requests = Counter(
            "skytwin_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )

    # ---- hooks ----

    def on_event(self, event: object) -> None:
        """The ``skytwin.nursery`` hook."""
        if isinstance(event, RetryScheduled):
            self.retries.labels(event.target, event.reason).inc()
        elif isinstance(event, RetryBudgetExhausted):
            self.budget_exhausted.labels(event.target).inc()
        elif isinstance(event, BreakerTransition):
            self.breaker_transitions.labels(event.new_state.value).inc()
        elif isinstance(event, ChildRestarted):
            self.restarts.labels(event.supervisor).inc()
        elif isinstance(event, ChildGivenUp):
            self.given_up.labels(event.supervisor).inc()
        elif isinstance(event, SupervisorEscalated):
            self.escalations.labels(event.supervisor).inc()

    def on_cycle(self, account: Any, result: str, started: float, duration: float) -> None:
        """The poller's cycle hook."""
        self.polls.labels(result).inc()
        if result != "skipped":
            self.poll_seconds.observe(duration)

    def on_signals(self, source: str, count: int) -> None:
        """New signals stored (by the poller or the ingest API).

        Producers name their own sources: any but Google's counts as ``other``, so
        the label set stays bounded.
        """
        if count:
            self.signals.labels(source if source in _GOOGLE_SOURCES else "other").inc(count)

    def on_request(self, method: str, route: str, status: int) -> None:
        """The web app's after-request hook."""
        self.http_requests.labels(method, route, str(status)).inc()

    def watch(self, *, pool: Any, poller: Any, supervisors: Iterable[Supervisor]) -> None:
        """Report live state (pool, breakers, supervisors) at scrape time."""
        self.registry.register(_LiveState(pool, poller, list(supervisors)))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _LiveState(Collector):
    """Gauges read from the running objects when Prometheus scrapes."""

    def __init__(self, pool: Any, poller: Any, supervisors: list[Supervisor]) -> None:
        self.pool = pool
        self.poller = poller
        self.supervisors = supervisors

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.pool.stats()
        in_use = GaugeMetricFamily(
            "skytwin_db_pool_connections", "Pool connections", labels=["state"]
        )
        in_use.add_metric(["in_use"], stats.in_use)
        in_use.add_metric(["idle"], stats.idle)
        in_use.add_metric(["open"], stats.open)
        yield in_use
        waiting = GaugeMetricFamily("skytwin_db_pool_waiting", "Tasks waiting for a connection")
        waiting.add_metric([], stats.waiting)
        yield waiting

        states: Tally[str] = Tally({state.value: 0 for state in BreakerState})
        unhealthy: list[tuple[str, BreakerState]] = []
        for connection_id, status in list(self.poller.statuses.items()):
            state = status.breaker.state
            states[state.value] += 1
            if state is not BreakerState.CLOSED and len(unhealthy) < MAX_ACCOUNT_SERIES:
                unhealthy.append((str(connection_id), state))
        by_state = GaugeMetricFamily(
            "skytwin_breakers", "Accounts by breaker state", labels=["state"]
        )
        for state_name, count in sorted(states.items()):
            by_state.add_metric([state_name], count)
        yield by_state
        per_account = GaugeMetricFamily(
            "skytwin_account_breaker_state",
            "Breaker state of accounts whose breaker is not closed "
            "(1 half_open, 2 open, 3 forced_open, 4 disabled; at most 100 series)",
            labels=["connection_id"],
        )
        for connection_id, state in unhealthy:
            per_account.add_metric([connection_id], _STATE_VALUE[state])
        yield per_account

        children = GaugeMetricFamily(
            "skytwin_supervisor_children",
            "Supervised children by state",
            labels=["supervisor", "state"],
        )
        for supervisor in self.supervisors:
            snapshot = supervisor.snapshot()
            counts = Tally(child.state.value for child in snapshot.children)
            for state_name, count in sorted(counts.items()):
                children.add_metric([snapshot.name, state_name], count)
        yield children
