"""ShardedTransport: small pools filled in order, never more requests in a shard than sockets."""

from __future__ import annotations

import httpx
import trio
import trio.testing

from skytwin.pipeline.limits import ShardedTransport


class Backend:
    """Stands in for one shard's connection pool: counts requests, blocks until released."""

    def __init__(self, release: trio.Event) -> None:
        self.release = release
        self.in_flight = 0
        self.most_in_flight = 0
        self.handled = 0
        self.closed = False

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        self.handled += 1
        return httpx.Response(200, json={"ok": True})

    def transport(self) -> httpx.AsyncBaseTransport:
        backend = self

        class Pool(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                return await backend.handle(request)

            async def aclose(self) -> None:
                backend.closed = True

        return Pool()


def sharded(shards: int, size: int, release: trio.Event) -> tuple[ShardedTransport, list[Backend]]:
    backends: list[Backend] = []

    def make_pool(pool_size: int) -> httpx.AsyncBaseTransport:
        assert pool_size == size
        backends.append(Backend(release))
        return backends[-1].transport()

    return ShardedTransport(make_pool, shards=shards, shard_size=size), backends


async def test_requests_fill_the_first_shard_with_room_and_never_exceed_its_size() -> None:
    release = trio.Event()
    transport, backends = sharded(3, 2, release)
    responses: list[httpx.Response] = []

    async def get(client: httpx.AsyncClient) -> None:
        responses.append(await client.get("http://google.test/x"))

    async with httpx.AsyncClient(transport=transport) as client, trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(get, client)
        await trio.testing.wait_all_tasks_blocked()
        # Three requests: the first shard takes two, the second one, the third none.
        assert [b.in_flight for b in backends] == [2, 1, 0]
        for _ in range(4):  # seven in all, one more than the six sockets: it queues
            nursery.start_soon(get, client)
        await trio.testing.wait_all_tasks_blocked()
        assert [b.in_flight for b in backends] == [2, 2, 2]
        release.set()
    assert [r.json() for r in responses] == [{"ok": True}] * 7
    assert all(b.most_in_flight <= 2 for b in backends)
    assert sum(b.handled for b in backends) == 7
    assert all(b.closed for b in backends)  # the client closed the transport, and so every pool


async def test_the_body_is_read_before_the_slot_is_given_back() -> None:
    release = trio.Event()
    release.set()
    transport, _ = sharded(1, 1, release)
    response = await transport.handle_async_request(httpx.Request("GET", "http://google.test/x"))
    # Already read: the next request may use the socket without waiting for this caller.
    assert response.content == b'{"ok":true}'
    assert transport.shards[0][0].borrowed_tokens == 0
