"""Fixtures for API tests: the real app on a loopback port, with real users and tokens."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

from skytwin.config import Settings
from skytwin.store import Pool, users
from skytwin.web import WebState, create_app, serve_web


@dataclass
class Api:
    """A running app and helpers to call it as some user."""

    base_url: str
    pool: Pool
    state: WebState

    async def new_user(self, email: str, *, admin: bool = False) -> tuple[int, str]:
        """Create a user; return (user_id, token)."""
        async with self.pool.connection() as conn:
            user = await users.create_user(conn, email, email.split("@")[0])
            token = await users.issue_token(conn, user.id, is_admin=admin)
        return user.id, token

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        """An HTTP client, authenticated with ``token`` if given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10)


@pytest.fixture
async def api(nursery: trio.Nursery, database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """The app served on 127.0.0.1 with a fresh database."""
    settings = dataclasses.replace(
        Settings.from_env({"SKYTWIN_HOME": str(tmp_path), "SKYTWIN_BIND": "127.0.0.1:0"}),
        database_url=database_url,
    )
    pool = Pool(database_url)
    state = WebState(settings=settings, pool=pool)
    stop = trio.Event()
    binds = await nursery.start(serve_web, create_app(state), settings, stop.wait)
    yield Api(str(binds[0]), pool, state)
    stop.set()
    await pool.close()
