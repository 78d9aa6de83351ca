"""Global limits on calls to Google: per-API concurrency and a request rate."""

from __future__ import annotations

import httpx
import pytest
import trio
from trio.testing import MockClock

from skytwin.pipeline.limits import ApiLimit, LimitedTransport, RateLimiter

GMAIL = "https://gmail.example/gmail/v1"
CALENDAR = "https://calendar.example/calendar/v3"


class SlowGoogle(httpx.AsyncBaseTransport):
    """Answers after one virtual second; records how many requests were in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak: dict[str, int] = {}
        self.started: list[tuple[str, float]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.in_flight += 1
        self.peak[host] = max(self.peak.get(host, 0), self.in_flight)
        self.started.append((host, trio.current_time()))
        try:
            await trio.sleep(1.0)
        finally:
            self.in_flight -= 1
        return httpx.Response(200, json={})


async def test_concurrency_is_capped_per_api(autojump_clock: MockClock) -> None:
    google = SlowGoogle()
    transport = LimitedTransport(
        google,
        [ApiLimit(GMAIL, trio.CapacityLimiter(4)), ApiLimit(CALENDAR, trio.CapacityLimiter(2))],
    )
    async with httpx.AsyncClient(transport=transport) as client:
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(client.get, f"{GMAIL}/users/me/messages/{n}")
        assert google.peak == {"gmail.example": 4}
        assert trio.current_time() == pytest.approx(5.0)  # 20 requests, 4 at a time, 1 s each


async def test_rate_limiter_spaces_requests_after_the_burst(autojump_clock: MockClock) -> None:
    limiter = RateLimiter(rate_per_s=10, burst=5)
    times: list[float] = []
    for _ in range(15):
        await limiter.acquire()
        times.append(trio.current_time())
    assert times[:5] == [0.0] * 5
    assert times[5:] == pytest.approx([0.1 * n for n in range(1, 11)])


async def test_requests_to_other_hosts_are_not_limited(autojump_clock: MockClock) -> None:
    google = SlowGoogle()
    transport = LimitedTransport(google, [ApiLimit(GMAIL, trio.CapacityLimiter(1))])
    async with httpx.AsyncClient(transport=transport) as client:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(client.get, "https://elsewhere.example/x")
    assert google.peak == {"elsewhere.example": 3}
    assert trio.current_time() == pytest.approx(1.0)
