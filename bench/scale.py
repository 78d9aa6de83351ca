"""Scale: N users polled against the fake Google on loopback while new mail arrives.

Run as ``python bench/scale.py`` (``--users 1000,10000 --interval-s 60
--duration-s 60``; ``--help`` for the rest). For each N it reports aggregate
polls/s, signals persisted/s, the p99 lag between a cycle's due time and its
start, RSS per supervised user and the p99 latency of ``/api/health/live``.
Progress lines go to stdout; the last line is one JSON object: the largest N's
figures at top level, every N under ``runs``.

Processes (all on the same machine, so they share its cores)::

    bench.py (orchestrator)   embedded PostgreSQL in a temp dir (no fsync, as the tests),
    │                         the account set-up, the /api/health/live prober (a thread
    │                         opening a new connection per probe, like a kubelet)
    ├── fake Google           World with N accounts, a steady mail + invite generator,
    │                         served by Hypercorn (its own process: never SkyTwin's CPU)
    └── SkyTwin               ``skytwin.app.run(settings)`` for real: web, the users and
                              housekeeping supervisors, discovery, the embedded pool

Every N gets a fresh SkyTwin process (so RSS is not left over from the previous
N), a fresh fake Google and a fresh database on the same PostgreSQL server.

What is measured, and how:

* Accounts are connected before SkyTwin starts (users by bulk SQL, each
  connection through ``skytwin.store.connections.upsert_connection``), so the
  first discovery round starts all N poll loops at once. By default this is a
  *restart*: each account also has its cursors and a live access token stored,
  as a running SkyTwin leaves them, so polls are incremental at once and the
  window shows the sustained rate. ``--cold`` is the first-ever start instead:
  a token refresh and a full sync per account, which at 10,000 accounts
  queues behind the Gmail rate limit (``GoogleLimits.rate_per_s``) for minutes.
  First syncs are admitted ``PollSettings.first_sync_concurrency`` at a time;
  ``--first-sync-concurrency 1000000`` shows a start without that admission.
* ``cycle_lag``: ``started - next_due`` per cycle, from a hook on the app's
  ``Poller.cycle_hooks``. At hook time ``AccountStatus.next_due`` still holds
  the due time of the cycle that just ran. ``app.run`` does not hand out its
  Poller, so the bench finds it with ``gc.get_referrers(Poller)`` once the app
  is up (observation only: nothing in the app is replaced).
  ``polls_per_s`` against ``polls_due_per_s`` says whether the rate was
  sustained at all: a loop that falls behind starts late cycles at once, so
  its lag alone would look fine.
* The run has a warm-up (``--warmup-s``, one interval by default: first polls
  are spread over it) and then a measured window of ``--duration-s``; polls,
  lags and signals count when the cycle *started* inside the window.
* ``rss_per_user_kb``: (VmRSS at the end of the window - VmRSS just before
  ``app.run`` - the app's fixed overhead) / N. The fixed overhead is measured
  once by a calibration run of the same app with no account. At that point
  every account has been polled at least once and sleeps until its next due
  time (supervised and idle, with its breaker, status and token manager).
  ``rss_per_user_started_kb`` is the same taken the moment all N poll loops
  were started, before most of them polled.
* ``live_*_ms``: a probe every 50 ms during the window, each on a new TCP
  connection; ``loop_lag_*_ms``: how late a task sleeping 20 ms inside SkyTwin
  wakes; ``gc_*``: the cyclic collector's pauses in the window (a full
  collection walks every long-lived object, and stops the event loop meanwhile).
* ``cpu_cores``: CPU seconds per second of each process during the window
  (``/proc/<pid>/stat``), to see who is saturated. Other work on the machine
  moves every figure: look at ``uptime`` before trusting one run.

Diagnostics and what-ifs (off by default): ``--profile DIR`` runs py-spy on
the SkyTwin process during the window; ``--census`` counts the objects the
cyclic collector tracks per user; ``--gc-freeze`` calls ``gc.freeze()`` once
``app.run`` is up, which the app itself does not do; ``--gc-off`` disables the
cyclic collector instead (to see how much of a latency figure is its pauses);
``--gc-threshold0 N`` sets the youngest generation's threshold (default 700).
``live_slowest`` lists the slowest probes, each with the longest loop stall and
the collector's pauses during it.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import logging
import multiprocessing as mp
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import trio

TARGETS = {"cycle_lag_p99_s": 1.0, "rss_per_user_kb": 50.0, "live_p99_ms": 50.0}
PROGRESS_EVERY_S = 10.0
PROBE_EVERY_S = 0.05
EMAIL_DOMAIN = "scale.example.com"

# (sender, subject, labels): one of each signal type the rules know.
MAIL = (
    ("news@letters.example.com", "Your weekly digest", ("INBOX", "UNREAD", "CATEGORY_PROMOTIONS")),
    ("billing@saas.example.com", "Subscription renewal notice", ("INBOX", "UNREAD")),
    ("carol@work.example.com", "Meeting invite: planning", ("INBOX", "UNREAD")),
    ("orders@shop.example.com", "Your order is out for delivery", ("INBOX", "UNREAD")),
    ("trips@air.example.com", "Flight booking confirmation", ("INBOX", "UNREAD")),
    ("no-reply@accounts.example.com", "Security alert", ("INBOX", "UNREAD", "CATEGORY_UPDATES")),
    ("dave@work.example.com", "Re: quarterly numbers", ("INBOX", "UNREAD", "IMPORTANT")),
)


def account_email(index: int) -> str:
    """The address of the bench's account number ``index``."""
    return f"user{index:05d}@{EMAIL_DOMAIN}"


# ---- /proc ----


def rss_kb(pid: int | str = "self") -> int:
    """VmRSS of a process in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def children_of(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (PostgreSQL's backends under its postmaster)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent:
                found.append(int(entry))
    return found


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def rounded(value: float | None, digits: int = 4) -> float | None:
    """``round`` that passes None through (no samples)."""
    return None if value is None else round(value, digits)


# ---- PostgreSQL (orchestrator) ----


def create_database(server: Any, name: str) -> str:
    """A new empty database on ``server``; returns its URL."""
    import psycopg

    with psycopg.connect(str(server.get_uri()), autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)")
        conn.execute(f"create database {name}")
    return str(server.get_uri(name))


async def connect_accounts(
    database_url: str,
    secret_key: str,
    refresh_tokens: list[str],
    warm: list[tuple[str, str, str]] | None = None,
    *,
    access_ttl_s: float = 3600.0,
    batch: int = 1000,
) -> float:
    """Migrate, then create one user per token and connect its account; returns seconds.

    With ``warm`` (per account: Gmail history id, Calendar sync token, access
    token) the accounts look as a running SkyTwin leaves them: cursors saved and
    a live access token stored, so a restart polls incrementally at once.
    """
    from skytwin.connectors.oauth import StoredTokens
    from skytwin.crypto import TokenCipher, key_from_env
    from skytwin.store import Pool, apply_migrations, transaction
    from skytwin.store.connections import upsert_connection

    started = time.perf_counter()
    cipher = TokenCipher(key_from_env(secret_key))
    pool = Pool(database_url, max_size=2)
    try:
        await apply_migrations(pool)
        for low in range(0, len(refresh_tokens), batch):
            chunk = list(enumerate(refresh_tokens[low : low + batch], start=low))

            async def insert(conn: Any, chunk: list[tuple[int, str]] = chunk) -> None:
                emails = [account_email(i) for i, _ in chunk]
                cur = await conn.execute(
                    """
                    insert into users (email, name)
                    select e, split_part(e, '@', 1) from unnest(%s::text[]) as e
                    returning id, email
                    """,
                    (emails,),
                )
                user_ids = {row["email"]: row["id"] for row in await cur.fetchall()}
                expires = datetime.now(UTC) + timedelta(seconds=access_ttl_s - 60)
                connection_ids, gmail, calendar = [], [], []
                for (i, token), email in zip(chunk, emails, strict=True):
                    tokens = StoredTokens(token)
                    if warm is not None:
                        tokens = StoredTokens(token, warm[i][2], expires)
                        gmail.append(warm[i][0])
                        calendar.append(warm[i][1])
                    connection_ids.append(
                        await upsert_connection(conn, cipher, user_ids[email], email, tokens)
                    )
                if warm is not None:
                    await conn.execute(
                        """
                        insert into connector_cursors
                            (connection_id, connector, cursor, last_success_at)
                        select c.id, c.connector, c.cursor, now()
                        from unnest(%(ids)s::bigint[] || %(ids)s::bigint[],
                                    %(connectors)s::text[], %(cursors)s::text[])
                             as c(id, connector, cursor)
                        """,
                        {
                            "ids": connection_ids,
                            "connectors": ["gmail"] * len(gmail) + ["calendar"] * len(calendar),
                            "cursors": gmail + calendar,
                        },
                    )

            await transaction(pool, insert)
    finally:
        await pool.close()
    return time.perf_counter() - started


def count_signals(database_url: str) -> dict[str, int]:
    """Rows SkyTwin stored, by table (signals by source)."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        out = {
            f"signals_{source}": count
            for source, count in conn.execute("select source, count(*) from signals group by 1")
        }
        for table in ("decisions", "approval_requests", "executions"):
            row = conn.execute(f"select count(*) from {table}").fetchone()
            out[table] = int(row[0]) if row else 0
    return out


# ---- the fake Google (its own process) ----


def add_mail(world: Any, rng: random.Random, email: str) -> None:
    """Deliver one message of a random kind."""
    sender, subject, labels = rng.choice(MAIL)
    world.add_message(email, sender=sender, subject=subject, labels=labels, snippet="bench")


def add_invite(world: Any, rng: random.Random, email: str) -> None:
    """Invite the account to a half-hour meeting in the next weeks (needsAction)."""
    day = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(
        days=rng.randint(1, 20), hours=rng.randint(0, 8)
    )
    world.add_event(
        email,
        summary=f"Review {rng.randint(1, 999)}",
        start=day,
        end=day + timedelta(minutes=30),
        organizer="boss@work.example.com",
        attendees=[email],
    )


def fake_google_main(pipe: Pipe, options: dict[str, Any]) -> None:
    """Process entry: serve a World of N accounts and deliver new mail at a steady rate."""
    trio.run(_fake_google, pipe, options)


async def _fake_google(pipe: Pipe, options: dict[str, Any]) -> None:
    from skytwin.fakegoogle import World, serve
    from skytwin.fakegoogle.protocol import encode_page_token

    n = options["users"]
    rng = random.Random(options["seed"])
    # A short request log: the bench never reads it, and 10^5 records per minute add up.
    world = World(seed=options["seed"], log_limit=100)
    emails = [account_email(i) for i in range(n)]
    tokens = [world.add_account(email) for email in emails]
    for email in emails:
        for _ in range(options["seed_messages"]):
            add_mail(world, rng, email)
        for _ in range(options["seed_events"]):
            add_invite(world, rng, email)
    delivered = Counter[str]()

    async def generate() -> None:
        mail_per_s = n * options["mail_per_user_min"] / 60.0
        events_per_s = n * options["events_per_user_min"] / 60.0
        tick = 0.05
        mail_due = events_due = 0.0
        next_at = trio.current_time()
        while True:
            next_at += tick
            await trio.sleep_until(next_at)
            mail_due += mail_per_s * tick
            events_due += events_per_s * tick
            while mail_due >= 1:
                add_mail(world, rng, rng.choice(emails))
                delivered["messages"] += 1
                mail_due -= 1
            while events_due >= 1:
                add_invite(world, rng, rng.choice(emails))
                delivered["events"] += 1
                events_due -= 1

    def stats() -> dict[str, Any]:
        by_operation = Counter[str]()
        for (operation, _), count in world.calls.items():
            by_operation[operation] += count
        return {
            "requests": dict(by_operation),
            "delivered": dict(delivered),
            "errors": len(world.errors),
            "cpu_s": time.process_time(),
        }

    warm = None
    if not options["cold"]:
        # What a running SkyTwin would have stored: each account's cursors (the
        # mailbox's history id, the calendar's sync token) and a live access token.
        warm = [
            (
                str(world.accounts[email].history_id),
                encode_page_token(
                    world.accounts[email].sync_generation, world.accounts[email].calendar_seq
                ),
                world.mint_access_token(email, world.accounts[email].scopes),
            )
            for email in emails
        ]
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(partial(serve, world, shutdown_trigger=stop.wait))
        pipe.send(
            {
                "base_url": base_url,
                "refresh_tokens": tokens,
                "warm": warm,
                "access_ttl_s": world.access_token_ttl_s,
                "client_id": world.client_id,
                "client_secret": world.client_secret,
            }
        )
        nursery.start_soon(generate)
        while True:
            command = await trio.to_thread.run_sync(pipe.recv, abandon_on_cancel=True)
            if command == "stats":
                pipe.send(stats())
            elif command == "stop":
                pipe.send(stats())
                break
        stop.set()
        nursery.cancel_scope.cancel()


# ---- SkyTwin (its own process) ----


class CycleLog:
    """What the poller's cycle hook saw: one row per finished cycle."""

    def __init__(self, statuses: dict[int, Any]) -> None:
        self.statuses = statuses
        self.started: list[float] = []
        self.lag: list[float] = []
        self.duration: list[float] = []
        self.result: list[str] = []

    def hook(self, account: Any, result: str, started: float, duration: float) -> None:
        """Poller.cycle_hooks entry: next_due still holds this cycle's due time."""
        status = self.statuses.get(account.connection_id)
        due = status.next_due if status is not None else None
        self.started.append(started)
        self.lag.append(started - due if due is not None else 0.0)
        self.duration.append(duration)
        self.result.append(result)

    def between(self, low: float, high: float) -> tuple[list[float], list[float], Counter[str]]:
        """(lags, durations, results) of cycles that started in [low, high)."""
        lags, durations, results = [], [], Counter[str]()
        for i, started in enumerate(self.started):
            if low <= started < high:
                lags.append(self.lag[i])
                durations.append(self.duration[i])
                results[self.result[i]] += 1
        return lags, durations, results


def skytwin_main(pipe: Pipe, options: dict[str, Any]) -> None:
    """Process entry: run SkyTwin for real and measure it from inside."""
    from skytwin.logs import configure_logging

    # Production logging (JSON lines at INFO), into a file instead of a terminal.
    log_file = open(options["log_path"], "a", buffering=1 << 16)  # noqa: SIM115
    configure_logging("json", stream=log_file)
    try:
        trio.run(_skytwin, pipe, options)
    finally:
        gc.callbacks.clear()
        log_file.close()


async def _skytwin(pipe: Pipe, options: dict[str, Any]) -> None:
    from skytwin.app import run
    from skytwin.config import Settings
    from skytwin.pipeline.poller import Poller, PollSettings

    settings = Settings.from_env(options["env"])
    # (perf_counter at the end, generation, seconds); collections may run outside trio.run.
    gc_pauses: list[tuple[float, int, float]] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            gc_started[0] = now
        else:
            gc_pauses.append((now, info["generation"], now - gc_started[0]))

    gc.collect()
    gc.callbacks.append(on_gc)
    rss_before = rss_kb()
    async with trio.open_nursery() as nursery:
        launched = trio.current_time()
        # No shutdown event is passed: app.run stops the way production stops it, on
        # SIGTERM (its own watch_signals task), which stop() below sends to this process.
        poll = None
        if options.get("first_sync_concurrency"):
            poll = PollSettings(
                interval_s=settings.poll_interval_s,
                first_sync_concurrency=options["first_sync_concurrency"],
            )
        binds = await nursery.start(partial(run, settings, poll=poll))
        t0 = trio.current_time()
        rss_started = rss_kb()
        pollers = [p for p in gc.get_referrers(Poller) if isinstance(p, Poller)]
        if len(pollers) != 1:
            raise RuntimeError(f"expected one Poller in the process, found {len(pollers)}")
        poller = pollers[0]
        if options.get("gc_threshold0"):
            gc.set_threshold(options["gc_threshold0"], *gc.get_threshold()[1:])
        if options["gc_off"]:
            gc.disable()  # what-if: how much of the latency is the cyclic collector's
        if options["gc_freeze"]:
            # What-if (not what app.run does): the poll loops just started live as long as
            # the process, so take them out of every future full collection's walk.
            gc.freeze()
        cycles = CycleLog(poller.statuses)
        poller.cycle_hooks.append(cycles.hook)
        pipe.send(
            {
                "kind": "started",
                "binds": binds,
                "start_s": round(t0 - launched, 3),
                "rss_before_kb": rss_before,
                "rss_started_kb": rss_started,
                "supervised": len(poller.statuses),
            }
        )
        if options["users"] == 0:  # calibration: the app's own footprint, settled
            await trio.sleep(options["settle_s"])
            pipe.send({"kind": "done", "rss_before_kb": rss_before, "rss_end_kb": rss_kb()})
            stop()
            return

        loop_lags: list[tuple[float, float]] = []
        nursery.start_soon(_watch_loop, loop_lags)
        window_start = t0 + options["warmup_s"]
        window_end = window_start + options["duration_s"]
        signals_at: dict[str, int] = {}
        window_pc: list[float] = []
        sent_window = False
        at = t0
        while at < window_end:
            at = min(at + PROGRESS_EVERY_S, window_end)
            if not sent_window and at > window_start:
                at = window_start  # stop exactly at the window's start once
            await trio.sleep_until(at)
            if at == window_start and not sent_window:
                sent_window = True
                signals_at["start"] = sum(s.signals_new for s in poller.statuses.values())
                window_pc = [time.perf_counter()]
                pipe.send({"kind": "window", "wall": time.time()})
            lags, durations, results = cycles.between(at - PROGRESS_EVERY_S, at)
            pipe.send(
                {
                    "kind": "progress",
                    "t": round(at - t0, 1),
                    "phase": "measure" if at > window_start else "warm-up",
                    "polls_per_s": round(sum(results.values()) / PROGRESS_EVERY_S, 1),
                    "lag_p99_s": rounded(percentile(lags, 0.99), 3),
                    "duration_p99_s": rounded(percentile(durations, 0.99), 3),
                    "not_ok": sum(c for r, c in results.items() if r != "ok"),
                    "rss_mb": round(rss_kb() / 1024, 1),
                    "http_conns": http_connections(poller.google.http),
                }
            )
        signals_at["end"] = sum(s.signals_new for s in poller.statuses.values())
        window_pc.append(time.perf_counter())
        rss_end = rss_kb()
        # A cycle is logged when it ends: give the ones that started late in the window
        # a moment to finish (they would otherwise go uncounted).
        await trio.sleep(3.0)
        lags, durations, results = cycles.between(window_start, window_end)
        loop = [lag for when, lag in loop_lags if window_start <= when < window_end]
        gc_window = [
            (gen, pause) for when, gen, pause in gc_pauses if window_pc[0] <= when < window_pc[1]
        ]
        trio_to_wall = time.time() - trio.current_time()
        pc_to_wall = time.time() - time.perf_counter()
        census = object_census(options["users"]) if options["census"] else None
        if census is not None:
            census["garbage"] = await garbage_census(cycles)
        pipe.send(
            {
                "kind": "done",
                "wall": time.time(),
                "rss_before_kb": rss_before,
                "rss_started_kb": rss_started,
                "rss_end_kb": rss_end,
                "rss_peak_kb": _vm_hwm_kb(),
                "polls": sum(results.values()),
                "results": dict(results),
                "signals": signals_at["end"] - signals_at["start"],
                "lag_p50_s": rounded(percentile(lags, 0.5)),
                "lag_p99_s": rounded(percentile(lags, 0.99)),
                "lag_max_s": rounded(max(lags, default=None)),
                "duration_p50_s": rounded(percentile(durations, 0.5)),
                "duration_p99_s": rounded(percentile(durations, 0.99)),
                "loop_lag_p99_ms": rounded(_ms(percentile(loop, 0.99)), 2),
                "loop_lag_max_ms": rounded(_ms(max(loop, default=None)), 2),
                "cycles_total": len(cycles.started),
                "census": census,
                "gc_full_collections": sum(1 for gen, _ in gc_window if gen == 2),
                "gc_pause_max_ms": rounded(_ms(max((p for _, p in gc_window), default=None)), 1),
                "gc_pause_total_ms": round(sum(p for _, p in gc_window) * 1000, 1),
                "gc_threshold": list(gc.get_threshold()),
                # For explaining the slowest probes: on the wall clock, the notable ones only.
                "loop_lags_wall": [
                    (when + trio_to_wall, lag)
                    for when, lag in loop_lags
                    if window_start <= when < window_end and lag >= 0.005
                ],
                "gc_pauses_wall": [
                    (when + pc_to_wall, gen, pause)
                    for when, gen, pause in gc_pauses
                    if window_pc[0] <= when < window_pc[1] and pause >= 0.002
                ],
            }
        )
        stop()


def stop() -> None:
    """Ask the app in this process to shut down gracefully (as a service manager would)."""
    os.kill(os.getpid(), signal.SIGTERM)


def http_connections(client: Any) -> int:
    """Connections held by the httpcore pools behind the shared Google client (diagnostic)."""
    found = 0
    seen: set[int] = set()
    todo = [getattr(client, "_transport", None)]
    while todo:
        transport = todo.pop()
        if transport is None or id(transport) in seen:
            continue
        seen.add(id(transport))
        pool = getattr(transport, "_pool", None)
        if pool is not None:
            found += len(pool.connections)
        todo.append(getattr(transport, "inner", None))
        for shard in getattr(transport, "shards", ()):
            todo.append(shard[1] if isinstance(shard, tuple) else shard)
    return found


def object_census(users: int, top: int = 25) -> dict[str, Any]:
    """GC-tracked objects per supervised user, by type: a full collection walks every one."""
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    return {
        "gc_tracked_per_user": round(sum(counts.values()) / users, 1),
        "top_per_user": {name: round(n / users, 2) for name, n in counts.most_common(top)},
    }


async def garbage_census(cycles: CycleLog, seconds: float = 5.0, top: int = 15) -> dict[str, Any]:
    """Cyclic garbage per poll, by type: what only the collector frees (and so keeps it busy).

    Collects everything, then keeps what the next collection finds (``DEBUG_SAVEALL``)
    after ``seconds`` of normal running, and divides by the polls in between.
    """
    gc.collect()
    polls_before = len(cycles.started)
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        await trio.sleep(seconds)
        gc.collect()
        found = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    polls = max(1, len(cycles.started) - polls_before)
    return {
        "polls": polls,
        "objects_per_poll": round(sum(found.values()) / polls, 1),
        "top_per_poll": {name: round(n / polls, 2) for name, n in found.most_common(top)},
    }


def explain_slowest(
    probes: list[tuple[float, float]],
    loop_lags: list[tuple[float, float]],
    gc_pauses: list[tuple[float, int, float]],
    top: int = 10,
) -> list[dict[str, Any]]:
    """The slowest probes, each with what SkyTwin's loop went through meanwhile.

    ``loop_max_ms``: the longest wake-up delay of the 20 ms sleeper inside the probe's
    span; ``gc_ms``: the collector's pauses overlapping it (by generation).
    """
    explained = []
    for at, ms in sorted(probes, key=lambda probe: probe[1], reverse=True)[:top]:
        begin = at - ms / 1000
        lags = [lag for when, lag in loop_lags if begin <= when <= at + 0.05]
        gcs = [
            (gen, pause) for end, gen, pause in gc_pauses if end >= begin and end - pause <= at
        ]
        explained.append(
            {
                "ms": round(ms, 1),
                "loop_max_ms": round(max(lags, default=0.0) * 1000, 1),
                "gc_ms": {
                    str(gen): round(sum(p for g, p in gcs if g == gen) * 1000, 1)
                    for gen in sorted({g for g, _ in gcs})
                },
            }
        )
    return explained


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def _watch_loop(samples: list[tuple[float, float]], period_s: float = 0.02) -> None:
    """How late the event loop wakes a sleeper: the scheduling delay every task sees."""
    while True:
        due = trio.current_time() + period_s
        await trio.sleep_until(due)
        now = trio.current_time()
        samples.append((now, now - due))


# ---- the liveness prober (a thread of the orchestrator) ----


class LiveProber:
    """GET /api/health/live every PROBE_EVERY_S on a new connection; (wall time, ms, status)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-prober", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._stop.is_set():
            started = time.perf_counter()
            status = 0
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                conn.request("GET", "/api/health/live")
                response = conn.getresponse()
                response.read()
                status = response.status
                conn.close()
            except OSError:
                pass
            self.samples.append((time.time(), (time.perf_counter() - started) * 1000, status))
            next_at += PROBE_EVERY_S
            self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def timed_between(self, low: float, high: float) -> list[tuple[float, float]]:
        """(wall time at the answer, ms) of the successful probes sent in [low, high)."""
        return [(at, ms) for at, ms, status in self.samples if low <= at < high and status == 200]

    def between(self, low: float, high: float) -> list[tuple[float, int]]:
        """(ms, status) of the probes sent in [low, high) (wall time)."""
        return [(ms, status) for at, ms, status in self.samples if low <= at < high]


# ---- orchestration ----


def spawn(
    target: Callable[[Pipe, dict[str, Any]], None], options: dict[str, Any]
) -> tuple[Any, Pipe]:
    """Start ``target(pipe, options)`` in a fresh interpreter; return (process, our pipe end)."""
    context = mp.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(theirs, options), daemon=True)
    process.start()
    theirs.close()
    return process, ours


def receive(pipe: Pipe, process: Any, timeout_s: float) -> Any:
    """The next message from a worker; RuntimeError if it died or stayed silent."""
    deadline = time.monotonic() + timeout_s
    while not pipe.poll(0.2):
        if not process.is_alive():
            raise RuntimeError(f"{process.name} exited with code {process.exitcode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} sent nothing for {timeout_s:g} s")
    return pipe.recv()


def stop_process(process: Any, timeout_s: float = 15) -> None:
    """Wait for a worker we started to exit; terminate it (by its pid) if it does not."""
    process.join(timeout_s)
    if process.is_alive():
        process.terminate()
        process.join(5)


def skytwin_env(
    home: Path, database_url: str, fake: dict[str, Any], secret_key: str, interval_s: float
) -> dict[str, str]:
    """The SKYTWIN_* variables of a SkyTwin pointed at the fake Google and the bench database."""
    base = fake["base_url"] if fake else "http://127.0.0.1:9"
    return {
        "SKYTWIN_HOME": str(home),
        "SKYTWIN_DATABASE_URL": database_url,
        "SKYTWIN_BIND": "127.0.0.1:0",
        "SKYTWIN_GMAIL_API_URL": f"{base}/gmail/v1",
        "SKYTWIN_CALENDAR_API_URL": f"{base}/calendar/v3",
        "SKYTWIN_OAUTH_TOKEN_URL": f"{base}/token",
        "SKYTWIN_OAUTH_AUTH_URL": f"{base}/o/oauth2/v2/auth",
        "SKYTWIN_GOOGLE_CLIENT_ID": fake.get("client_id", "bench"),
        "SKYTWIN_GOOGLE_CLIENT_SECRET": fake.get("client_secret", "bench"),
        "SKYTWIN_SECRET_KEY": secret_key,
        "SKYTWIN_POLL_INTERVAL_S": str(interval_s),
        "SKYTWIN_LOG_FORMAT": "json",
    }


def say(line: str) -> None:
    print(line, flush=True)


def calibrate(server: Any, workdir: Path, secret_key: str, args: argparse.Namespace) -> int:
    """RSS the app itself adds (no account at all): web, pool, Google client, supervisors."""
    url = create_database(server, "scale_calibration")
    trio.run(partial(connect_accounts, url, secret_key, []))
    options = {
        "users": 0,
        "env": skytwin_env(workdir / "home-0", url, {}, secret_key, args.interval_s),
        "log_path": str(workdir / "skytwin-0.log"),
        "settle_s": 3.0,
        "gc_freeze": args.gc_freeze,
        "gc_off": args.gc_off,
        "census": False,
        "warmup_s": 0.0,
        "duration_s": 0.0,
    }
    process, pipe = spawn(skytwin_main, options)
    try:
        receive(pipe, process, 60)
        done = receive(pipe, process, 60)
    finally:
        stop_process(process)
    overhead = int(done["rss_end_kb"] - done["rss_before_kb"])
    say(f"[calibration] the app with no account adds {overhead / 1024:.1f} MiB of RSS")
    return overhead


def run_one(
    n: int, server: Any, workdir: Path, secret_key: str, overhead_kb: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One N: fake Google + SkyTwin processes, the prober, the figures."""
    say(f"[{n}] starting the fake Google with {n} accounts")
    fake_options = {
        "users": n,
        "seed": args.seed,
        "seed_messages": args.seed_messages,
        "seed_events": args.seed_events,
        "mail_per_user_min": args.mail_per_user_min,
        "events_per_user_min": args.events_per_user_min,
        "cold": args.cold,
    }
    fake_process, fake_pipe = spawn(fake_google_main, fake_options)
    skytwin_process = None
    prober: LiveProber | None = None
    try:
        fake = receive(fake_pipe, fake_process, 300)
        url = create_database(server, f"scale_{n}")
        setup_s = trio.run(
            partial(
                connect_accounts, url, secret_key, fake["refresh_tokens"], fake["warm"],
                access_ttl_s=fake["access_ttl_s"],
            )
        )
        say(f"[{n}] {n} accounts connected in {setup_s:.1f} s; starting SkyTwin")
        options = {
            "users": n,
            "env": skytwin_env(workdir / f"home-{n}", url, fake, secret_key, args.interval_s),
            "log_path": str(workdir / f"skytwin-{n}.log"),
            "census": args.census,
            "gc_freeze": args.gc_freeze,
            "gc_off": args.gc_off,
            "gc_threshold0": args.gc_threshold0,
            "first_sync_concurrency": args.first_sync_concurrency,
            "warmup_s": args.warmup_s if args.warmup_s is not None else args.interval_s,
            "duration_s": args.duration_s,
        }
        skytwin_process, pipe = spawn(skytwin_main, options)
        started = receive(pipe, skytwin_process, 300)
        host, port = started["binds"][0].removeprefix("http://").rsplit(":", 1)
        prober = LiveProber(host, int(port))
        prober.start()
        say(
            f"[{n}] SkyTwin up in {started['start_s']} s with {started['supervised']} "
            f"supervised accounts, RSS {started['rss_started_kb'] / 1024:.0f} MiB"
        )
        postmaster = server.get_pid()
        window: dict[str, Any] = {}
        profiler = None
        while True:
            message = receive(pipe, skytwin_process, options["warmup_s"] + args.duration_s + 120)
            if message["kind"] == "window":
                window["wall"] = message["wall"]
                if args.profile:
                    profiler = start_profiler(args.profile, n, skytwin_process.pid, args.duration_s)
                window["cpu"] = _cpu_snapshot(skytwin_process.pid, fake_process.pid, postmaster)
                fake_pipe.send("stats")
                window["fake"] = receive(fake_pipe, fake_process, 30)
            elif message["kind"] == "progress":
                say(
                    f"[{n}] t={message['t']:>5}s {message['phase']:<7} "
                    f"polls/s={message['polls_per_s']:<7} lag_p99={message['lag_p99_s']} s "
                    f"cycle_p99={message['duration_p99_s']} s not_ok={message['not_ok']} "
                    f"rss={message['rss_mb']} MiB conns={message['http_conns']}"
                )
            elif message["kind"] == "done":
                done = message
                break
        cpu_end = _cpu_snapshot(skytwin_process.pid, fake_process.pid, postmaster)
        fake_pipe.send("stats")
        fake_end = receive(fake_pipe, fake_process, 30)
        prober.stop()
        live = prober.between(window["wall"], done["wall"])
        live_timed = prober.timed_between(window["wall"], done["wall"])
        if profiler is not None:
            profiler.wait(30)
    finally:
        if prober is not None:
            prober.stop()
        if skytwin_process is not None:
            stop_process(skytwin_process)
        if fake_process.is_alive():
            try:
                fake_pipe.send("stop")
            except OSError:
                pass
        stop_process(fake_process)

    seconds = args.duration_s
    wall_s = done["wall"] - window["wall"]
    live_ms = [ms for ms, status in live if status == 200]
    requests = Counter(fake_end["requests"])
    requests.subtract(window["fake"]["requests"])
    cpu = {
        name: round((cpu_end[name] - window["cpu"][name]) / wall_s, 3) for name in cpu_end
    }
    result = {
        "users": n,
        "start": "cold" if args.cold else "warm",
        "gc_freeze": args.gc_freeze,
        "gc_off": args.gc_off,
        "first_sync_concurrency": args.first_sync_concurrency,
        "interval_s": args.interval_s,
        "warmup_s": options["warmup_s"],
        "duration_s": seconds,
        "polls_per_s": round(done["polls"] / seconds, 2),
        "polls_due_per_s": round(n / args.interval_s, 2),
        "signals_per_s": round(done["signals"] / seconds, 2),
        "cycle_lag_p50_s": done["lag_p50_s"],
        "cycle_lag_p99_s": done["lag_p99_s"],
        "cycle_lag_max_s": done["lag_max_s"],
        "cycle_duration_p50_s": done["duration_p50_s"],
        "cycle_duration_p99_s": done["duration_p99_s"],
        "cycle_results": done["results"],
        "loop_lag_p99_ms": done["loop_lag_p99_ms"],
        "loop_lag_max_ms": done["loop_lag_max_ms"],
        "gc_full_collections": done["gc_full_collections"],
        **({"census": done["census"]} if done["census"] else {}),
        "gc_pause_max_ms": done["gc_pause_max_ms"],
        "gc_pause_total_ms": done["gc_pause_total_ms"],
        "gc_threshold": done["gc_threshold"],
        "rss_per_user_kb": round(
            (done["rss_end_kb"] - done["rss_before_kb"] - overhead_kb) / n, 2
        ),
        "rss_per_user_started_kb": round(
            (done["rss_started_kb"] - done["rss_before_kb"] - overhead_kb) / n, 2
        ),
        "rss_mb": round(done["rss_end_kb"] / 1024, 1),
        "rss_peak_mb": round(done["rss_peak_kb"] / 1024, 1),
        "live_p50_ms": rounded(percentile(live_ms, 0.5), 2),
        "live_p99_ms": rounded(percentile(live_ms, 0.99), 2),
        "live_max_ms": rounded(max(live_ms, default=None), 2),
        "live_samples": len(live),
        "live_slowest": explain_slowest(live_timed, done["loop_lags_wall"], done["gc_pauses_wall"]),
        "live_failures": len(live) - len(live_ms),
        "start_s": started["start_s"],
        "cpu_cores": cpu,
        "google_requests_per_s": {
            op: round(count / wall_s, 1) for op, count in sorted(requests.items()) if count
        },
        "fake_google_errors": fake_end["errors"],
        "delivered": fake_end["delivered"],
        "stored": count_signals(url),
    }
    lag, rss, live = result["cycle_lag_p99_s"], result["rss_per_user_kb"], result["live_p99_ms"]
    result["targets_met"] = {
        # "At the sustained rate": the polls due were really made (3 % slack for the
        # cycles still running when the window closed).
        "sustained": result["polls_per_s"] >= 0.97 * result["polls_due_per_s"],
        "cycle_lag_p99_s": lag is not None and lag < TARGETS["cycle_lag_p99_s"],
        "rss_per_user_kb": rss <= TARGETS["rss_per_user_kb"],
        "live_p99_ms": live is not None and live <= TARGETS["live_p99_ms"],
    }
    return result


def start_profiler(directory: str, n: int, pid: int, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy on the SkyTwin process for the measured window (collapsed stacks)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(directory) / f"skytwin-{n}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"[{n}] profiling SkyTwin (pid {pid}) with py-spy into {out}")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--nonblocking",
         "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _cpu_snapshot(skytwin: int, fake: int, postmaster: int) -> dict[str, float]:
    return {
        "skytwin": cpu_s(skytwin),
        "fake_google": cpu_s(fake),
        "postgres": cpu_s(postmaster) + sum(cpu_s(pid) for pid in children_of(postmaster)),
        "bench": cpu_s(os.getpid()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", default="1000,10000", help="comma-separated N values")
    parser.add_argument("--interval-s", type=float, default=60.0, help="poll interval (default 60)")
    parser.add_argument("--duration-s", type=float, default=60.0, help="measured window")
    parser.add_argument(
        "--warmup-s", type=float, default=None, help="before the window (default: one interval)"
    )
    parser.add_argument(
        "--mail-per-user-min", type=float, default=0.1, help="new messages per user per minute"
    )
    parser.add_argument(
        "--events-per-user-min", type=float, default=0.01, help="new invites per user per minute"
    )
    parser.add_argument("--seed-messages", type=int, default=1, help="messages per mailbox")
    parser.add_argument("--seed-events", type=int, default=1, help="events per calendar at start")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="first-ever start: no stored cursors or access tokens (default: a restart)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy the SkyTwin process during the window into DIR"
    )
    parser.add_argument(
        "--census", action="store_true", help="count GC-tracked objects per user at the end"
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="what-if: gc.freeze() in SkyTwin once app.run is up (app.run does not)",
    )
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="what-if: gc.disable() in SkyTwin once app.run is up (RSS then grows)",
    )
    parser.add_argument(
        "--gc-threshold0",
        type=int,
        help="what-if: gc.set_threshold(N, ...) in SkyTwin once app.run is up",
    )
    parser.add_argument(
        "--first-sync-concurrency",
        type=int,
        help="what-if: PollSettings.first_sync_concurrency (default 32; huge = no admission)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, pgdata)")
    args = parser.parse_args()
    sizes = sorted({int(x) for x in args.users.split(",") if x.strip()})
    if not sizes or sizes[0] < 1:
        parser.error("--users needs positive numbers")

    from skytwin.logs import configure_logging
    from skytwin.store.embedded import start_throwaway

    configure_logging("json", level=logging.WARNING)  # the set-up's own lines stay off stdout
    workdir = Path(tempfile.mkdtemp(prefix="skytwin-bench-scale-"))
    os.chmod(workdir, 0o755)  # the embedded server may run as its own system user
    secret_key = secrets.token_urlsafe(32)
    say(f"scale bench: users={sizes} interval={args.interval_s:g}s window={args.duration_s:g}s "
        f"cpus={os.cpu_count()} workdir={workdir}")
    server = start_throwaway(workdir / "pgdata")
    runs: dict[str, dict[str, Any]] = {}
    try:
        overhead_kb = calibrate(server, workdir, secret_key, args)
        for n in sizes:
            runs[str(n)] = run_one(n, server, workdir, secret_key, overhead_kb, args)
            say(f"[{n}] " + json.dumps(runs[str(n)]))
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    largest = runs[str(sizes[-1])]
    summary = {
        key: largest[key]
        for key in (
            "users", "polls_per_s", "signals_per_s", "cycle_lag_p99_s", "rss_per_user_kb",
            "live_p99_ms", "targets_met",
        )
    }
    summary["app_overhead_mb"] = round(overhead_kb / 1024, 1)
    summary["runs"] = runs
    print(json.dumps(summary, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
