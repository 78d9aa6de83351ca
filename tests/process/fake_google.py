"""A fake Google in a background thread of the test process, for SkyTwin subprocesses.

The fake runs its own ``trio.run`` so it outlives every SkyTwin process a test
starts and kills. Tests change its world through ``call``, which runs the change
inside the fake's event loop (never concurrently with a request).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio

from skytwin.fakegoogle import GoogleEndpoints, World, serve

T = TypeVar("T")


class FakeGoogleThread:
    """Serve ``world`` on 127.0.0.1 from a thread until ``stop``."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.endpoints: GoogleEndpoints | None = None

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                base_url = await nursery.start(
                    partial(serve, self.world, shutdown_trigger=self._stop.wait)
                )
                self.endpoints = GoogleEndpoints(base_url)
                self._ready.set()

        trio.run(main)

    def start(self) -> GoogleEndpoints:
        """Start serving; return the endpoints."""
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the fake Google did not start within 10 s")
        assert self.endpoints is not None
        return self.endpoints

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` inside the fake's event loop and return its result."""
        assert self._token is not None
        return trio.from_thread.run_sync(partial(fn, *args, **kwargs), trio_token=self._token)

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=10)

    def env(self) -> dict[str, str]:
        """SKYTWIN_* variables that point SkyTwin at this fake."""
        assert self.endpoints is not None
        return {
            **self.endpoints.as_env(),
            "SKYTWIN_GOOGLE_CLIENT_ID": self.world.client_id,
            "SKYTWIN_GOOGLE_CLIENT_SECRET": self.world.client_secret,
        }
