"""``python -m skytwin demo``: SkyTwin on the embedded PostgreSQL against an in-process fake Google.

Three demo accounts belong to one demo user:

* ``healthy@demo.skytwin`` answers promptly;
* ``flaky@demo.skytwin`` answers a share of requests with 429/503 and a
  ``Retry-After``, and slowly otherwise: retries absorb it;
* ``down@demo.skytwin`` is unreachable for a few minutes, then recovers: its
  breaker opens, probes, and closes again, and nothing it missed is lost.

New mail and invites arrive every few seconds. Everything runs in this one
Trio process: the fake Google is served on a loopback port beside SkyTwin.
"""

from __future__ import annotations

import dataclasses
import random
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import structlog
import trio

from .app import run as run_app
from .config import Settings
from .connectors.oauth import StoredTokens
from .crypto import TokenCipher, load_or_create_key
from .fakegoogle import GoogleEndpoints, World, serve
from .pipeline.poller import PollSettings
from .store import Pool, open_database, users
from .store.connections import upsert_connection
from .store.embedded import embedded_postgres

log = structlog.get_logger("skytwin.demo")

DEMO_USER = "demo@demo.skytwin"
HEALTHY = "healthy@demo.skytwin"
FLAKY = "flaky@demo.skytwin"
DOWN = "down@demo.skytwin"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """The demo's timings; tests shorten them."""

    poll_interval_s: float = 5.0
    mail_every_s: float = 4.0
    outage_s: float = 180.0
    breaker_open_s: float = 20.0
    breaker_open_max_s: float = 80.0
    flaky_error_rate: float = 0.3
    flaky_latency_s: float = 0.4
    seed: int = 2026


SENDERS = [
    (
        "The Weekly Digest <newsletter@news.example>",
        "Your weekly digest: 12 stories",
        ["CATEGORY_PROMOTIONS"],
    ),
    ("StreamBox Billing <billing@streambox.example>", "Your subscription renews on Friday", []),
    ("Fresh Grocer <orders@grocer.example>", "Your grocery order is out for delivery", []),
    ("SkyAir <no-reply@skyair.example>", "Flight SA 214 booking confirmation", []),
    ("GitHub <noreply@github.example>", "[skytwin] CI passed on main", ["CATEGORY_UPDATES"]),
    ("Maya Chen <maya@work.example>", "Notes from Tuesday's planning", []),
    ("Omar Haddad <omar@work.example>", "Can you review the Q3 draft?", []),
]
MEETINGS = ["Design review", "1:1 with Maya", "Quarterly planning", "Vendor call", "Team retro"]


def demo_world(options: DemoOptions) -> World:
    """The fake Google with three accounts, some mail already waiting, and their faults."""
    world = World(seed=options.seed)
    for email in (HEALTHY, FLAKY, DOWN):
        world.add_account(email)
    for plan_api in ("gmail", "calendar"):
        flaky = world.faults(plan_api, FLAKY)
        flaky.error_rate = options.flaky_error_rate
        flaky.error_statuses = (429, 503)
        flaky.error_retry_after = "1"
        flaky.latency_s = options.flaky_latency_s
    return world


def start_outage(world: World, options: DemoOptions) -> None:
    """Take the down account's Google away for ``outage_s`` seconds from now."""
    until = trio.current_time() + options.outage_s
    for api in ("gmail", "calendar", "oauth"):
        plan = world.faults(api, DOWN)
        plan.down_until = until
        plan.down_status = 503


async def generate_mail(
    world: World,
    options: DemoOptions,
    rng: random.Random,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Deliver realistic mail and invites to the demo accounts every few seconds."""
    task_status.started()
    n = 0
    while True:
        for email in (HEALTHY, FLAKY, DOWN):
            deliver_one(world, email, n, rng)
        n += 1
        await trio.sleep(options.mail_every_s)


def deliver_one(world: World, email: str, n: int, rng: random.Random) -> None:
    """One new message, or (every third time) an invite that may clash."""
    now = datetime.now(UTC)
    if n % 3 == 2:
        start = (now + timedelta(hours=rng.randint(2, 72))).replace(
            minute=0, second=0, microsecond=0
        )
        world.add_event(
            email,
            summary=rng.choice(MEETINGS),
            organizer=rng.choice(["maya@work.example", "omar@work.example"]),
            start=start,
            end=start + timedelta(minutes=rng.choice([30, 60])),
        )
        if rng.random() < 0.5:  # something already there: the invite will clash
            world.add_event(
                email, summary="Focus time", start=start, end=start + timedelta(hours=1)
            )
        return
    sender, subject, labels = rng.choice(SENDERS)
    world.add_message(
        email,
        sender=sender,
        subject=subject,
        snippet=f"{subject} (demo message {n})",
        labels=("INBOX", "UNREAD", *labels),
    )


async def prepare_user(pool: Pool, cipher: TokenCipher, world: World) -> str:
    """The demo user with its three accounts connected; returns a fresh sign-in token."""
    async with pool.connection() as conn:
        async with conn.transaction():
            try:
                user = await users.get_user_by_email(conn, DEMO_USER)
            except users.UnknownUser:
                user = await users.create_user(conn, DEMO_USER, "Demo Person")
            for email in (HEALTHY, FLAKY, DOWN):
                refresh_token = world.issue_refresh_token(email)
                await upsert_connection(conn, cipher, user.id, email, StoredTokens(refresh_token))
            return await users.issue_token(conn, user.id, label="demo", is_admin=True)


def demo_settings(
    settings: Settings, endpoints: GoogleEndpoints, world: World, options: DemoOptions
) -> Settings:
    """The run settings pointed at the fake Google, under ``SKYTWIN_HOME/demo``."""
    return dataclasses.replace(
        endpoints.point(settings, world),
        home=demo_home(settings),
        poll_interval_s=options.poll_interval_s,
    )


def demo_home(settings: Settings) -> Path:
    """Where the demo keeps its own database (never the real instance's)."""
    return settings.home / "demo"


async def run_demo(settings: Settings, options: DemoOptions) -> None:
    """Serve the fake Google, run SkyTwin against it, print how to sign in."""
    world = demo_world(options)
    rng = random.Random(options.seed)
    stop_fake = trio.Event()
    async with AsyncExitStack() as stack:
        if settings.database_url is None:
            # Started once here, for preparing the demo user and for SkyTwin alike.
            url = await stack.enter_async_context(embedded_postgres(demo_home(settings)))
            settings = dataclasses.replace(settings, database_url=url)
        nursery = await stack.enter_async_context(trio.open_nursery())
        await _run_in(nursery, settings, options, world, rng, stop_fake)


async def _run_in(
    nursery: trio.Nursery,
    settings: Settings,
    options: DemoOptions,
    world: World,
    rng: random.Random,
    stop_fake: trio.Event,
) -> None:
    """Serve the fake Google, prepare the demo user, run SkyTwin until it stops."""
    base_url = await nursery.start(partial(serve, world, shutdown_trigger=stop_fake.wait))
    endpoints = GoogleEndpoints(base_url)
    for email in (HEALTHY, FLAKY, DOWN):
        for _ in range(3):
            deliver_one(world, email, rng.randint(0, 1), rng)
    run_settings = demo_settings(settings, endpoints, world, options)
    poll = PollSettings(
        interval_s=options.poll_interval_s,
        cycle_deadline_s=max(30.0, 6 * options.poll_interval_s),
        breaker_open_s=options.breaker_open_s,
        breaker_open_max_s=options.breaker_open_max_s,
    )
    cipher = TokenCipher(load_or_create_key(run_settings.home, run_settings.secret_key))

    # Connect the demo accounts before SkyTwin starts, so discovery finds them at once.
    async with open_database(run_settings) as pool:
        token = await prepare_user(pool, cipher, world)
    app_done = trio.Event()

    async def skytwin(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await run_app(run_settings, poll=poll, task_status=task_status)
        finally:
            app_done.set()

    binds = await nursery.start(skytwin)
    start_outage(world, options)
    await nursery.start(generate_mail, world, options, rng)
    url = binds[0]
    print(
        "\nSkyTwin demo is running.\n"
        f"  Dashboard:     {url}/\n"
        f"  Sign-in token: {token}\n"
        f"  Accounts:      {HEALTHY} (healthy),\n"
        f"                 {FLAKY} (flaky: 429/503 with Retry-After, slow),\n"
        f"                 {DOWN} (Google down for {options.outage_s:g} s, then back)\n"
        f"  Metrics:       {url}/metrics\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
    log.info("skytwin.demo_ready", dashboard=f"{url}/", accounts=[HEALTHY, FLAKY, DOWN])
    # SkyTwin returns after Ctrl-C/SIGTERM (its own signal handling); then the rest stops.
    await app_done.wait()
    stop_fake.set()
    nursery.cancel_scope.cancel()
