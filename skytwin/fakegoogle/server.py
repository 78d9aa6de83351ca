"""Serving the fake Google over real HTTP with Hypercorn, inside the caller's nursery."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from skytwin.config import Settings
from skytwin.fakegoogle.app import make_app
from skytwin.fakegoogle.world import World


@dataclass(frozen=True, slots=True)
class GoogleEndpoints:
    """Where each Google service lives under one fake's base URL."""

    base_url: str

    @property
    def gmail_api_url(self) -> str:
        """Base of the Gmail API (SKYTWIN_GMAIL_API_URL)."""
        return f"{self.base_url}/gmail/v1"

    @property
    def calendar_api_url(self) -> str:
        """Base of the Calendar API (SKYTWIN_CALENDAR_API_URL)."""
        return f"{self.base_url}/calendar/v3"

    @property
    def oauth_token_url(self) -> str:
        """The token endpoint (SKYTWIN_OAUTH_TOKEN_URL)."""
        return f"{self.base_url}/token"

    @property
    def oauth_auth_url(self) -> str:
        """The consent endpoint (SKYTWIN_OAUTH_AUTH_URL)."""
        return f"{self.base_url}/o/oauth2/v2/auth"

    def as_env(self) -> dict[str, str]:
        """The SKYTWIN_* variables that point SkyTwin at this fake."""
        return {
            "SKYTWIN_GMAIL_API_URL": self.gmail_api_url,
            "SKYTWIN_CALENDAR_API_URL": self.calendar_api_url,
            "SKYTWIN_OAUTH_TOKEN_URL": self.oauth_token_url,
            "SKYTWIN_OAUTH_AUTH_URL": self.oauth_auth_url,
        }

    def point(self, settings: Settings, world: World) -> Settings:
        """``settings`` pointed at this fake, with ``world``'s OAuth client credentials."""
        return dataclasses.replace(
            settings,
            gmail_api_url=self.gmail_api_url,
            calendar_api_url=self.calendar_api_url,
            oauth_token_url=self.oauth_token_url,
            oauth_auth_url=self.oauth_auth_url,
            google_client_id=world.client_id,
            google_client_secret=world.client_secret,
        )


async def serve(
    world: World,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    keep_alive_timeout_s: float = 3600.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `world` until `shutdown_trigger` returns (or until cancelled); reports the base URL.

    The long keep-alive default matters for virtual-time tests: Hypercorn's
    5 s default would close idle connections in the middle of a retry
    schedule and make the client's next request race the close.
    """
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.keep_alive_timeout = keep_alive_timeout_s
    config.accesslog = None
    config.errorlog = None  # the app records its own errors in world.errors
    config.graceful_timeout = 1.0
    # The app sends its own Date from world.now(), so an HTTP-date Retry-After is
    # measured against the same (possibly virtual) wall clock that produced it.
    config.include_date_header = False
    config.include_server_header = False
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            lambda task_status: hypercorn_serve(
                make_app(world),  # type: ignore[arg-type]
                config,
                shutdown_trigger=shutdown_trigger,
                task_status=task_status,
            )
        )
        task_status.started(binds[0])
