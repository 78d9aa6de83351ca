"""In-process pipeline rig: fake Google over real HTTP, real PostgreSQL, SkyTwin's poller."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from trio.testing import MockClock

from skytwin.config import Settings
from skytwin.connectors.oauth import StoredTokens
from skytwin.crypto import TokenCipher
from skytwin.fakegoogle import World
from skytwin.nursery import BreakerTransition, Supervisor, add_hook
from skytwin.pipeline.google import Google, GoogleLimits, open_google
from skytwin.pipeline.poller import Poller, PollSettings
from skytwin.store import Pool, users
from skytwin.store.connections import Account, PgTokenRepository, upsert_connection
from tests.clocks import jump_when_idle
from tests.fakegoogle.harness import served, virtual_now


@dataclass
class Cycle:
    """One finished poll cycle, as the poller reported it."""

    connection_id: int
    result: str
    started: float
    duration: float


@dataclass
class PipelineRig:
    """Everything a pipeline test touches."""

    world: World
    pool: Pool
    google: Google
    poller: Poller
    users: Supervisor
    cipher: TokenCipher
    cycles: list[Cycle] = field(default_factory=list)
    transitions: list[tuple[float, BreakerTransition]] = field(default_factory=list)

    async def connect(self, email: str) -> Account:
        """A SkyTwin user with a connected Google account of the same address."""
        refresh_token = self.world.add_account(email)
        async with self.pool.connection() as conn:
            user = await users.create_user(conn, email, email.split("@")[0])
            connection_id = await upsert_connection(
                conn, self.cipher, user.id, email, StoredTokens(refresh_token)
            )
        return Account(connection_id, user.id, email, "active")

    def cycles_of(self, account: Account, result: str | None = None) -> list[Cycle]:
        """The cycles of one account (optionally only those with ``result``)."""
        return [
            c
            for c in self.cycles
            if c.connection_id == account.connection_id and (result is None or c.result == result)
        ]

    async def stored_ids(self, account: Account) -> dict[str, list[str]]:
        """External ids of the account's stored signals by source (duplicates would show)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "select source, external_id from signals where user_id = %s order by id",
                (account.user_id,),
            )
            rows = await cur.fetchall()
        found: dict[str, list[str]] = {"gmail": [], "calendar": []}
        for row in rows:
            found.setdefault(row["source"], []).append(row["external_id"])
        return found


def expected_ids(world: World, email: str) -> dict[str, list[str]]:
    """What SkyTwin should hold for ``email``: every inbox message, every event version seen."""
    account = world.account(email)
    messages = sorted(account.messages)
    events = sorted(account.events)
    return {"gmail": messages, "calendar": events}


def event_ids(stored: list[str]) -> list[str]:
    """Calendar external ids are ``event id:version``; the event ids alone, deduplicated."""
    return sorted({external_id.split(":", 1)[0] for external_id in stored})


@asynccontextmanager
async def pipeline_rig(
    world: World,
    database_url: str,
    tmp_path: Path,
    *,
    settings: PollSettings | None = None,
    limits: GoogleLimits | None = None,
    seed: int = 7,
    **supervisor_options: Any,
) -> AsyncIterator[PipelineRig]:
    """Serve ``world``, open the store and the shared Google client, run a users supervisor."""
    import random

    cipher = TokenCipher(b"k" * 32)
    pool = Pool(database_url, max_size=10)
    transitions: list[tuple[float, BreakerTransition]] = []

    def on_event(event: object) -> None:
        if isinstance(event, BreakerTransition):
            transitions.append((trio.current_time(), event))

    remove_hook = add_hook(on_event)
    try:
        async with served(world) as endpoints:
            base = Settings.from_env({"SKYTWIN_HOME": str(tmp_path)})
            app_settings = endpoints.point(base, world)
            repository = PgTokenRepository(pool, cipher)
            async with open_google(app_settings, repository, limits=limits) as google:
                poller = Poller(
                    pool,
                    google,
                    settings or PollSettings(),
                    rng=random.Random(seed),
                    now=virtual_now,
                )
                # As in skytwin/app.py: users are independent peers, stopped all at once.
                options = {"parallel_shutdown": True, **supervisor_options}
                supervisor = Supervisor("users", rng=random.Random(seed), **options)
                rig = PipelineRig(
                    world, pool, google, poller, supervisor, cipher, transitions=transitions
                )
                poller.cycle_hooks.append(
                    lambda account, result, started, duration: rig.cycles.append(
                        Cycle(account.connection_id, result, started, duration)
                    )
                )
                async with trio.open_nursery() as nursery:
                    clock = trio.lowlevel.current_clock()
                    assert isinstance(clock, MockClock) and clock.autojump_threshold == math.inf
                    nursery.start_soon(jump_when_idle, clock)
                    await nursery.start(supervisor.run)
                    try:
                        yield rig
                    finally:
                        await supervisor.shutdown()
                        nursery.cancel_scope.cancel()
    finally:
        remove_hook()
        await pool.close()


async def until(predicate: Callable[[], object], *, within: float, step: float = 1.0) -> float:
    """Poll ``predicate`` on virtual time; return how long it took; fail past ``within``.

    ``within`` is inclusive: a predicate that turns true exactly at the bound passes.
    """
    started = trio.current_time()
    with trio.fail_after(within + step):
        while not predicate():  # noqa: ASYNC110 - virtual time: a poll with a deadline
            await trio.sleep(step)
    elapsed = trio.current_time() - started
    assert elapsed <= within, f"took {elapsed:g} s, more than {within:g} s"
    return elapsed
