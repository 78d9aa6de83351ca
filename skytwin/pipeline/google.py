"""Everything SkyTwin needs to call Google, built once per process and shared.

One httpx client (explicit timeouts, pool limits, per-API concurrency and rate
limits), one ``GoogleApi`` per API with its own retry budget, the OAuth client,
and one ``AccessTokenManager`` per connected account (so an account's Gmail
sync, Calendar sync and actions share a token and a single refresh).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import trio

from ..config import Settings
from ..connectors.api import GoogleApi, make_google_client
from ..connectors.oauth import AccessTokenManager, OAuthClient, TokenRepository
from ..nursery import RetryBudget
from .limits import ApiLimit, LimitedTransport, RateLimiter, ShardedTransport


@dataclass(frozen=True, slots=True)
class GoogleLimits:
    """Global limits per API (requests in flight, requests per second), and socket pooling."""

    concurrency: int = 64
    rate_per_s: float = 200.0
    message_fetch_concurrency: int = 32
    # Sockets per httpcore pool: its per-request bookkeeping is quadratic in this.
    connections_per_pool: int = 8


@dataclass
class Google:
    """Shared access to Google for every user of this process."""

    http: httpx.AsyncClient
    gmail: GoogleApi
    calendar: GoogleApi
    oauth: OAuthClient
    repository: TokenRepository
    fetch_limiter: trio.CapacityLimiter
    managers: dict[int, AccessTokenManager] = field(default_factory=dict)

    def tokens(self, connection_id: int) -> AccessTokenManager:
        """The account's token manager (one per account, shared by all its calls)."""
        manager = self.managers.get(connection_id)
        if manager is None:
            manager = AccessTokenManager(
                connection_id, oauth=self.oauth, repository=self.repository
            )
            self.managers[connection_id] = manager
        return manager

    def forget(self, connection_id: int) -> None:
        """Drop the account's cached tokens (it was disconnected or reconnected)."""
        self.managers.pop(connection_id, None)


@asynccontextmanager
async def open_google(
    settings: Settings,
    repository: TokenRepository,
    *,
    limits: GoogleLimits | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Google]:
    """Build the shared client and APIs; close the client on exit."""
    limits = limits or GoogleLimits()

    def limit(prefix: str) -> ApiLimit:
        return ApiLimit(
            prefix, trio.CapacityLimiter(limits.concurrency), RateLimiter(limits.rate_per_s)
        )

    def pool(size: int) -> httpx.AsyncBaseTransport:
        return httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size)
        )

    # Enough small pools for every request the three APIs' limits let through at once.
    total = limits.concurrency * 3
    inner = transport or ShardedTransport(
        pool,
        shards=-(-total // limits.connections_per_pool),
        shard_size=limits.connections_per_pool,
    )
    wrapped = LimitedTransport(
        inner,
        [
            limit(settings.gmail_api_url),
            limit(settings.calendar_api_url),
            limit(settings.oauth_token_url),
        ],
    )
    client = make_google_client(transport=wrapped, max_connections=limits.concurrency * 3)
    try:
        yield Google(
            http=client,
            gmail=GoogleApi.gmail(
                client, base_url=settings.gmail_api_url, budget=RetryBudget("gmail")
            ),
            calendar=GoogleApi.calendar(
                client, base_url=settings.calendar_api_url, budget=RetryBudget("calendar")
            ),
            oauth=OAuthClient(
                client,
                settings.google_client_id or "",
                settings.google_client_secret or "",
                token_url=settings.oauth_token_url,
                budget=RetryBudget("oauth"),
            ),
            repository=repository,
            fetch_limiter=trio.CapacityLimiter(limits.message_fetch_concurrency),
        )
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
