"""Structured logging: one event per line, JSON off a TTY.

Every SkyTwin log call names a stable event (``skytwin.poll_failed``) and puts
the details in flat fields. Records from other libraries (Hypercorn, psycopg)
go through the same renderer, so an operator's log pipeline sees one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(
    log_format: str | None = None, *, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging to ``stream`` as JSON or console lines."""
    stream = stream or sys.stderr
    if log_format is None:
        log_format = "console" if stream.isatty() else "json"
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: the rich formatter prints local variables, and a local
        # variable may hold a token.
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )

    structlog.configure(
        processors=[
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Hypercorn's access log is ours to emit (with route and status), not its.
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    # httpx logs every request at INFO: 20,000 lines a minute at 10,000 accounts,
    # and retries, failures and breaker moves already have their own events.
    logging.getLogger("httpx").setLevel(logging.WARNING)
