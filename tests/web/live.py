"""A live pipeline beside the API under test.

The fake Google served on loopback, SkyTwin's real Google client, poller and
"users" supervisor, wired into the ``WebState`` of the ``api`` fixture's app,
so ``/api/status`` and the OAuth routes see what the running service would.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from skytwin.connectors.oauth import StoredTokens
from skytwin.crypto import TokenCipher
from skytwin.fakegoogle import GoogleEndpoints, World, serve
from skytwin.nursery import Supervisor
from skytwin.pipeline.google import open_google
from skytwin.pipeline.housekeeping import sync_accounts
from skytwin.pipeline.poller import Poller, PollSettings
from skytwin.store.connections import PgTokenRepository, upsert_connection

from .conftest import Api


@dataclass
class Live:
    """The running pieces, for tests to script and inspect."""

    api: Api
    world: World
    poller: Poller
    users: Supervisor
    cipher: TokenCipher

    async def connect(self, user_id: int, email: str) -> int:
        """Connect ``email`` (a fake Google account) for ``user_id`` and start polling it."""
        refresh_token = self.world.issue_refresh_token(email)
        async with self.api.pool.connection() as conn:
            connection_id = await upsert_connection(
                conn, self.cipher, user_id, email, StoredTokens(refresh_token=refresh_token)
            )
        await sync_accounts(self.api.pool, self.poller, self.users)
        return connection_id


@asynccontextmanager
async def live_pipeline(
    api: Api, world: World, *, poll_interval_s: float = 0.05
) -> AsyncIterator[Live]:
    """Serve ``world`` and run the poller under a "users" supervisor for the block."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(partial(serve, world, shutdown_trigger=stop.wait))
        endpoints = GoogleEndpoints(base_url)
        settings = endpoints.point(api.state.settings, world)
        cipher = TokenCipher(secrets.token_bytes(32))
        async with open_google(settings, PgTokenRepository(api.pool, cipher)) as google:
            poller = Poller(
                api.pool, google, PollSettings(interval_s=poll_interval_s), rng=random.Random(7)
            )
            users = Supervisor("users", shutdown_grace_s=1.0)
            await nursery.start(users.run)
            api.state.settings = settings
            api.state.cipher = cipher
            api.state.google = google
            api.state.poller = poller
            api.state.supervisors = [users]
            try:
                yield Live(api, world, poller, users, cipher)
            finally:
                await users.shutdown()
                stop.set()
