"""Global limits on calls to Google, shared by every user.

10,000 users must neither open 10,000 sockets nor exceed Google's quotas. A
``LimitedTransport`` wraps the shared httpx transport: each request to an API
first takes a slot of that API's ``trio.CapacityLimiter`` (concurrency) and a
token of its ``RateLimiter`` (requests per second). Behind it, a
``ShardedTransport`` keeps the sockets in several small connection pools
rather than one large one (see its docstring for why).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import trio


class RateLimiter:
    """A token bucket on Trio's clock: ``rate_per_s`` sustained, ``burst`` at once."""

    def __init__(self, rate_per_s: float, burst: int | None = None) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rate_per_s = rate_per_s
        self.burst = float(burst if burst is not None else max(1, int(rate_per_s)))
        self._tokens = self.burst
        self._updated: float | None = None
        self._lock = trio.Lock()  # FIFO: waiters are served in order

    def _refill(self, now: float) -> None:
        if self._updated is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now

    async def acquire(self) -> None:
        """Wait (in arrival order) until a request may be sent."""
        async with self._lock:
            self._refill(trio.current_time())
            if self._tokens < 1:
                await trio.sleep((1 - self._tokens) / self.rate_per_s)
                self._refill(trio.current_time())
            self._tokens -= 1


class ShardedTransport(httpx.AsyncBaseTransport):
    """Requests spread over ``shards`` small connection pools of ``shard_size`` sockets each.

    httpcore 1.0's pool does its bookkeeping on every request and every
    response by walking all of its connections (with a ``poll()`` of each idle
    socket), and for each idle one it counts all the connections again
    (encode/httpcore#1035). The cost per request is quadratic in the pool's size:
    at 64 connections that bookkeeping takes several times the CPU of the
    request itself, and it grows just when load does. Small pools keep each walk
    short. A request takes a slot in the first shard with room, so a shard never
    holds more requests than sockets (its pool never queues), and quiet periods
    leave the later shards' sockets to expire. With ``shards * shard_size`` at
    least the concurrency allowed in front of it, a request never waits here.
    """

    def __init__(
        self,
        make_pool: Callable[[int], httpx.AsyncBaseTransport],
        *,
        shards: int,
        shard_size: int,
    ) -> None:
        if shards < 1 or shard_size < 1:
            raise ValueError("shards and shard_size must be at least 1")
        self.shards = [
            (trio.CapacityLimiter(shard_size), make_pool(shard_size)) for _ in range(shards)
        ]

    def _pick(self) -> tuple[trio.CapacityLimiter, httpx.AsyncBaseTransport]:
        for shard in self.shards:
            if shard[0].available_tokens:
                return shard
        # Every slot taken (more concurrency in front than slots here): queue on the least busy.
        return min(self.shards, key=lambda shard: shard[0].statistics().tasks_waiting)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through a shard with a free slot; the slot covers the whole body."""
        slot, transport = self._pick()
        async with slot:
            response = await transport.handle_async_request(request)
            # Read (and so release the socket) while holding the slot.
            await response.aread()
            return response

    async def aclose(self) -> None:
        """Close every shard's pool."""
        for _, transport in self.shards:
            await transport.aclose()


@dataclass(frozen=True, slots=True)
class ApiLimit:
    """The limits of one API, matched by URL prefix."""

    prefix: str
    concurrency: trio.CapacityLimiter
    rate: RateLimiter | None = None


class LimitedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that applies per-API concurrency and rate limits."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limits: list[ApiLimit]) -> None:
        self.inner = inner
        # Longest prefix first, so a more specific URL wins.
        self.limits = sorted(limits, key=lambda limit: len(limit.prefix), reverse=True)

    def _limit_for(self, url: str) -> ApiLimit | None:
        for limit in self.limits:
            if url.startswith(limit.prefix):
                return limit
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` once its API has a free slot and a rate token."""
        limit = self._limit_for(str(request.url))
        if limit is None:
            return await self.inner.handle_async_request(request)
        async with limit.concurrency:
            if limit.rate is not None:
                await limit.rate.acquire()
            response = await self.inner.handle_async_request(request)
            # Read the body while holding the slot, so the slot measures real work.
            await response.aread()
            return response

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()
