"""Serving the app with Hypercorn inside our own nursery."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from ..config import Settings


def hypercorn_config(settings: Settings) -> Config:
    """Hypercorn settings derived from ours."""
    config = Config()
    config.bind = [settings.bind]
    config.graceful_timeout = settings.shutdown_grace_s
    config.accesslog = None
    # A Logger (not "-") so Hypercorn's lines go through our structured handler.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.keep_alive_timeout = 5
    return config


async def serve_web(
    app: QuartTrio,
    settings: Settings,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown_trigger`` returns; report the bound URLs when listening."""
    await serve(
        app,
        hypercorn_config(settings),
        shutdown_trigger=shutdown_trigger,
        task_status=task_status,
    )
