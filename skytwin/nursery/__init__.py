"""SkyTwin's trio-native resilience primitives: retry, circuit breaker, supervisor, events.

Pure Trio, no I/O of their own, time only from ``trio.current_time()``/``trio.sleep()``
so tests under ``MockClock`` assert exact virtual times. See ``docs/nursery.md``.
"""

from skytwin.nursery.breaker import Breaker, BreakerSnapshot, FailureRate
from skytwin.nursery.errors import (
    BreakerTimeoutError,
    CircuitOpenError,
    NurseryError,
    SupervisorEscalation,
)
from skytwin.nursery.events import (
    BreakerTransition,
    ChildGivenUp,
    ChildRestarted,
    ChildStarted,
    ChildStopped,
    Event,
    Hook,
    RetryBudgetExhausted,
    RetryGaveUp,
    RetryScheduled,
    SupervisorEscalated,
    add_hook,
    describe_error,
    emit,
    event_name,
    install_structlog_hook,
)
from skytwin.nursery.retry import (
    RETRYABLE_STATUS,
    Classifier,
    Retryable,
    RetryBudget,
    RetryPolicy,
    backoff_delay,
    classify_httpx,
    parse_retry_after,
    retry_call,
)
from skytwin.nursery.states import BreakerState, ChildState
from skytwin.nursery.supervisor import (
    DEFAULT_RESTART_BACKOFF,
    ChildSnapshot,
    Restart,
    Strategy,
    Supervisor,
    SupervisorSnapshot,
    stop_requested,
)

__all__ = [
    "DEFAULT_RESTART_BACKOFF",
    "RETRYABLE_STATUS",
    "Breaker",
    "BreakerSnapshot",
    "BreakerState",
    "BreakerTimeoutError",
    "BreakerTransition",
    "ChildGivenUp",
    "ChildRestarted",
    "ChildSnapshot",
    "ChildStarted",
    "ChildState",
    "ChildStopped",
    "CircuitOpenError",
    "Classifier",
    "Event",
    "FailureRate",
    "Hook",
    "NurseryError",
    "Restart",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryGaveUp",
    "RetryPolicy",
    "RetryScheduled",
    "Retryable",
    "Strategy",
    "Supervisor",
    "SupervisorEscalated",
    "SupervisorEscalation",
    "SupervisorSnapshot",
    "add_hook",
    "backoff_delay",
    "classify_httpx",
    "describe_error",
    "emit",
    "event_name",
    "install_structlog_hook",
    "parse_retry_after",
    "retry_call",
    "stop_requested",
]
