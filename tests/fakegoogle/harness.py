"""Test harness: a fake Google served on 127.0.0.1 and SkyTwin's connectors wired to it.

Everything runs under a virtual clock, the served fake included, so request
times in `world.log` are exact. The wall clock the data needs is derived from
it (`virtual_now`), so a test that waits ten virtual minutes sees dates move
ten minutes too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
import trio

from skytwin.connectors.api import GoogleApi, make_google_client
from skytwin.connectors.oauth import (
    AccessTokenManager,
    InMemoryTokenRepository,
    OAuthClient,
    StoredTokens,
)
from skytwin.fakegoogle import GoogleEndpoints, World, serve
from skytwin.nursery import RetryBudget, RetryPolicy

EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # a Monday morning
EMAIL = "ada@example.com"
CONNECTION_ID = 1
# The reference policy without jitter, so retry times are exact: 1 s, 2 s, 4 s.
NO_JITTER = RetryPolicy(attempts=4, base_delay_s=1.0, cap_s=30.0, jitter="none")
READ_TIMEOUT_S = 10.0


def virtual_now() -> datetime:
    """The wall clock as the tests see it: EPOCH plus the virtual trio time."""
    return EPOCH + timedelta(seconds=trio.current_time())


def new_world(**kwargs: object) -> World:
    """A world on the virtual wall clock."""
    return World(now=virtual_now, **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def served(world: World) -> AsyncIterator[GoogleEndpoints]:
    """Serve `world` on 127.0.0.1:0 for the duration of the block; stop it through Hypercorn."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(partial(serve, world, shutdown_trigger=stop.wait))
        try:
            yield GoogleEndpoints(base_url)
        finally:
            stop.set()


@dataclass
class Rig:
    """One user's view of a served fake: HTTP client, OAuth client, token store and APIs."""

    world: World
    endpoints: GoogleEndpoints
    http: httpx.AsyncClient
    policy: RetryPolicy = NO_JITTER
    repository: InMemoryTokenRepository = field(default_factory=InMemoryTokenRepository)
    email: str = EMAIL
    _managers: dict[int, AccessTokenManager] = field(default_factory=dict)

    @property
    def oauth(self) -> OAuthClient:
        """SkyTwin's OAuth client pointed at the fake."""
        return OAuthClient(
            self.http,
            self.world.client_id,
            self.world.client_secret,
            token_url=self.endpoints.oauth_token_url,
            policy=self.policy,
        )

    def connect(self, email: str = EMAIL, connection_id: int = CONNECTION_ID) -> None:
        """Create the account at Google and store its refresh token as a connection."""
        refresh_token = self.world.add_account(email)
        self.repository.put(connection_id, StoredTokens(refresh_token=refresh_token))

    def tokens(self, connection_id: int = CONNECTION_ID) -> AccessTokenManager:
        """The (one) token manager of a connection."""
        manager = self._managers.get(connection_id)
        if manager is None:
            manager = self._managers[connection_id] = AccessTokenManager(
                connection_id, oauth=self.oauth, repository=self.repository, now=virtual_now
            )
        return manager

    def gmail(self, budget: RetryBudget | None = None) -> GoogleApi:
        """The Gmail API at the fake."""
        return GoogleApi.gmail(
            self.http, base_url=self.endpoints.gmail_api_url, policy=self.policy, budget=budget
        )

    def calendar(self, budget: RetryBudget | None = None) -> GoogleApi:
        """The Calendar API at the fake."""
        return GoogleApi.calendar(
            self.http, base_url=self.endpoints.calendar_api_url, policy=self.policy, budget=budget
        )


@asynccontextmanager
async def rig_for(world: World, *, policy: RetryPolicy = NO_JITTER) -> AsyncIterator[Rig]:
    """Serve `world` and build a Rig around it (the HTTP client closes before the server)."""
    async with served(world) as endpoints:
        async with make_google_client(read_s=READ_TIMEOUT_S) as http:
            yield Rig(world, endpoints, http, policy)
