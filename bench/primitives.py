"""Per-call overhead of SkyTwin's retry and breaker against tenacity, stamina, pybreaker,
purgatory and aiobreaker.

Run: ``.venv/bin/python bench/primitives.py`` (``--quick`` for a short smoke run).

Method. Every figure is an *overhead*: the time per call of the wrapped form minus the
time per call of the bare form, measured back to back in the same loop (trio, asyncio
or plain sync for pybreaker) so loop costs cancel. Each scenario is sampled REPS times
(~20 ms per rep, in which bare and wrapped alternate in 10 chunks so noise from other
processes hits both) and the median per-rep overhead is reported. The wrapped call is
a trivial ``async def op(): return 1``.

- ``wrapped_call_overhead_us``: ours, ``async with breaker.permit(): await retry_call(op)``.
- ``open_reject_overhead_us``: ours, a call refused by an open breaker (enter ``permit()``,
  raise and catch ``CircuitOpenError``) minus a bare successful call, the same formula.
- Peers do one job each (tenacity/stamina retry, pybreaker/purgatory/aiobreaker
  breaker). ``overhead_ratio_vs[peer]`` is the peer's overhead for its job divided by
  ours for the same job, each side using its cheapest documented way (every form
  measured is listed under ``peers``). Async peers are measured under trio and under
  asyncio; the ratio uses the peer's lower figure. ``stacks`` compares whole
  retry-plus-breaker stacks built from peers with our wrapped call.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import trio

# Run from a checkout without installing: make `skytwin` importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skytwin.nursery import Breaker, CircuitOpenError, RetryPolicy, retry_call  # noqa: E402

QUICK = "--quick" in sys.argv
# Many short samples: on a shared machine a burst of noise then spoils a few samples,
# which the median ignores, rather than a few long ones.
REPS = 3 if QUICK else 15
SAMPLE_S = 0.01 if QUICK else 0.02

Loop = Callable[[int], Awaitable[None]]
SyncLoop = Callable[[int], None]


async def op() -> int:
    return 1


def op_sync() -> int:
    return 1


# ---- timing ------------------------------------------------------------------------


CHUNKS = 10  # bare and wrapped alternate in chunks within each sample


def _summary(bares: list[float], wraps: list[float], n: int) -> dict[str, float]:
    overheads = [w - b for w, b in zip(wraps, bares, strict=True)]
    return {
        "overhead_us": statistics.median(overheads),
        "bare_us": statistics.median(bares),
        "wrapped_us": statistics.median(wraps),
        "iterations": n,
    }


async def _time_async(loop: Loop, n: int) -> float:
    start = time.perf_counter()
    await loop(n)
    return time.perf_counter() - start


async def overhead_async(bare: Loop, wrapped: Loop) -> dict[str, float]:
    """Median of per-rep (wrapped - bare) in microseconds, plus the medians of each.

    Within a rep, bare and wrapped run in alternating chunks, so a burst of noise
    from other processes lands on both sides instead of skewing one of them.
    """
    probe = max(await _time_async(wrapped, 200) / 200 * 1e6, 0.05)
    chunk = max(50, int(SAMPLE_S * 1e6 / probe / CHUNKS))
    await _time_async(bare, chunk)  # warm up both paths
    await _time_async(wrapped, chunk)
    bares, wraps = [], []
    for rep in range(REPS):
        gc.collect()
        spent = {bare: 0.0, wrapped: 0.0}
        for i in range(CHUNKS):
            order = (bare, wrapped) if (rep + i) % 2 == 0 else (wrapped, bare)
            for loop in order:
                spent[loop] += await _time_async(loop, chunk)
        bares.append(spent[bare] / (chunk * CHUNKS) * 1e6)
        wraps.append(spent[wrapped] / (chunk * CHUNKS) * 1e6)
    return _summary(bares, wraps, chunk * CHUNKS)


def _time_sync(loop: SyncLoop, n: int) -> float:
    start = time.perf_counter()
    loop(n)
    return time.perf_counter() - start


def overhead_sync(bare: SyncLoop, wrapped: SyncLoop) -> dict[str, float]:
    """The synchronous twin of ``overhead_async`` (for pybreaker)."""
    probe = max(_time_sync(wrapped, 200) / 200 * 1e6, 0.05)
    chunk = max(50, int(SAMPLE_S * 1e6 / probe / CHUNKS))
    _time_sync(bare, chunk)
    _time_sync(wrapped, chunk)
    bares, wraps = [], []
    for rep in range(REPS):
        gc.collect()
        spent = {bare: 0.0, wrapped: 0.0}
        for i in range(CHUNKS):
            order = (bare, wrapped) if (rep + i) % 2 == 0 else (wrapped, bare)
            for loop in order:
                spent[loop] += _time_sync(loop, chunk)
        bares.append(spent[bare] / (chunk * CHUNKS) * 1e6)
        wraps.append(spent[wrapped] / (chunk * CHUNKS) * 1e6)
    return _summary(bares, wraps, chunk * CHUNKS)


async def bare_async(n: int) -> None:
    for _ in range(n):
        await op()


def bare_sync(n: int) -> None:
    for _ in range(n):
        op_sync()


# ---- ours ----------------------------------------------------------------------------

POLICY = RetryPolicy(attempts=4, base_delay_s=1.0, cap_s=30.0, jitter="full")


async def ours() -> dict[str, dict[str, float]]:
    breaker = Breaker("bench")
    open_breaker = Breaker("bench-open")
    open_breaker.force_open()

    async def wrapped(n: int) -> None:
        for _ in range(n):
            async with breaker.permit():
                await retry_call(op, policy=POLICY, target="bench")

    async def retry_only(n: int) -> None:
        for _ in range(n):
            await retry_call(op, policy=POLICY, target="bench")

    async def breaker_call(n: int) -> None:
        for _ in range(n):
            await breaker.call(op)

    async def breaker_permit(n: int) -> None:
        for _ in range(n):
            async with breaker.permit():
                await op()

    async def reject(n: int) -> None:
        for _ in range(n):
            try:
                async with open_breaker.permit():
                    await op()
            except CircuitOpenError:
                pass

    async def reject_call(n: int) -> None:
        for _ in range(n):
            try:
                await open_breaker.call(op)
            except CircuitOpenError:
                pass

    return {
        "wrapped": await overhead_async(bare_async, wrapped),
        "retry": await overhead_async(bare_async, retry_only),
        "breaker_call": await overhead_async(bare_async, breaker_call),
        "breaker_permit": await overhead_async(bare_async, breaker_permit),
        "open_reject_permit": await overhead_async(bare_async, reject),
        "open_reject_call": await overhead_async(bare_async, reject_call),
    }


# ---- peers ---------------------------------------------------------------------------


async def tenacity_forms() -> dict[str, dict[str, float]]:
    import tenacity

    def make() -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(4),
            wait=tenacity.wait_random_exponential(multiplier=1, max=30),
            retry=tenacity.retry_if_exception_type(OSError),
            reraise=True,
        )

    retrying = make()

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_random_exponential(multiplier=1, max=30),
        retry=tenacity.retry_if_exception_type(OSError),
        reraise=True,
    )
    async def decorated() -> int:
        return 1

    async def reused(n: int) -> None:
        for _ in range(n):
            await retrying(op)

    async def decorator(n: int) -> None:
        for _ in range(n):
            await decorated()

    return {
        "AsyncRetrying": await overhead_async(bare_async, reused),
        "decorator": await overhead_async(bare_async, decorator),
    }


async def stamina_forms() -> dict[str, dict[str, float]]:
    import stamina

    @stamina.retry(on=OSError, attempts=4, wait_initial=1.0, wait_max=30.0)
    async def decorated() -> int:
        return 1

    async def decorator(n: int) -> None:
        for _ in range(n):
            await decorated()

    async def context(n: int) -> None:
        for _ in range(n):
            async for attempt in stamina.retry_context(
                on=OSError, attempts=4, wait_initial=1.0, wait_max=30.0
            ):
                with attempt:
                    await op()

    return {
        "decorator": await overhead_async(bare_async, decorator),
        "retry_context": await overhead_async(bare_async, context),
    }


def pybreaker_forms() -> dict[str, dict[str, float]]:
    import pybreaker

    breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=300)
    open_breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=300)
    open_breaker.open()

    def call(n: int) -> None:
        for _ in range(n):
            breaker.call(op_sync)

    def reject(n: int) -> None:
        for _ in range(n):
            try:
                open_breaker.call(op_sync)
            except pybreaker.CircuitBreakerError:
                pass

    return {
        "call": overhead_sync(bare_sync, call),
        "open_reject": overhead_sync(bare_sync, reject),
    }


async def aiobreaker_forms() -> dict[str, dict[str, float]]:
    import aiobreaker

    breaker = aiobreaker.CircuitBreaker(fail_max=3, timeout_duration=timedelta(seconds=300))
    open_breaker = aiobreaker.CircuitBreaker(fail_max=3, timeout_duration=timedelta(seconds=300))
    open_breaker.open()

    async def call(n: int) -> None:
        for _ in range(n):
            await breaker.call_async(op)

    async def reject(n: int) -> None:
        for _ in range(n):
            try:
                await open_breaker.call_async(op)
            except aiobreaker.CircuitBreakerError:
                pass

    return {
        "call_async": await overhead_async(bare_async, call),
        "open_reject": await overhead_async(bare_async, reject),
    }


async def purgatory_forms() -> dict[str, dict[str, float]]:
    import purgatory
    from purgatory.domain.model import OpenedState

    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=3, default_ttl=300)
    await factory.initialize()
    reused = await factory.get_breaker("bench")

    @factory("bench")
    async def decorated() -> int:
        return 1

    opened = await factory.get_breaker("bench-open")
    for _ in range(3):
        try:
            async with opened:
                raise OSError("down")
        except OSError:
            pass

    async def per_call(n: int) -> None:
        for _ in range(n):
            async with await factory.get_breaker("bench"):
                await op()

    async def reuse(n: int) -> None:
        for _ in range(n):
            async with reused:
                await op()

    async def decorator(n: int) -> None:
        for _ in range(n):
            await decorated()

    async def reject(n: int) -> None:
        for _ in range(n):
            try:
                async with await factory.get_breaker("bench-open"):
                    await op()
            except OpenedState:
                pass

    return {
        "get_breaker_per_call": await overhead_async(bare_async, per_call),
        "reused_breaker": await overhead_async(bare_async, reuse),
        "decorator": await overhead_async(bare_async, decorator),
        "open_reject": await overhead_async(bare_async, reject),
    }


async def stack_forms() -> dict[str, dict[str, float]]:
    """Retry-plus-breaker stacks assembled from peers (breaker outside, like ours)."""
    import aiobreaker
    import stamina
    import tenacity

    breaker = aiobreaker.CircuitBreaker(fail_max=3, timeout_duration=timedelta(seconds=300))
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_random_exponential(multiplier=1, max=30),
        retry=tenacity.retry_if_exception_type(OSError),
        reraise=True,
    )

    @stamina.retry(on=OSError, attempts=4, wait_initial=1.0, wait_max=30.0)
    async def stamina_op() -> int:
        return 1

    async def tenacity_aiobreaker(n: int) -> None:
        for _ in range(n):
            await breaker.call_async(retrying, op)

    async def stamina_aiobreaker(n: int) -> None:
        for _ in range(n):
            await breaker.call_async(stamina_op)

    return {
        "tenacity+aiobreaker": await overhead_async(bare_async, tenacity_aiobreaker),
        "stamina+aiobreaker": await overhead_async(bare_async, stamina_aiobreaker),
    }


def run_on(loop_name: str, fn: Callable[[], Awaitable[Any]]) -> tuple[Any, str | None]:
    """Run ``fn`` under trio or asyncio; (result, None) or (None, the error it raised)."""
    try:
        if loop_name == "trio":
            return trio.run(fn), None
        return asyncio.run(fn()), None  # type: ignore[arg-type]
    except Exception as exc:  # a peer that cannot run on this loop
        return None, f"{type(exc).__name__}: {exc}"


# ---- report ----------------------------------------------------------------------------


def main() -> None:
    started = time.perf_counter()
    mine = trio.run(ours)
    ours_for_job = {
        "retry": mine["retry"]["overhead_us"],
        "breaker": min(mine["breaker_call"]["overhead_us"], mine["breaker_permit"]["overhead_us"]),
    }
    our_reject = mine["open_reject_permit"]["overhead_us"]

    peers: dict[str, dict[str, Any]] = {}
    for name, job, forms_fn in [
        ("tenacity", "retry", tenacity_forms),
        ("stamina", "retry", stamina_forms),
        ("purgatory", "breaker", purgatory_forms),
        ("aiobreaker", "breaker", aiobreaker_forms),
    ]:
        entry: dict[str, Any] = {"job": job, "loops": {}}
        for loop_name in ("trio", "asyncio"):
            forms, error = run_on(loop_name, forms_fn)
            entry["loops"][loop_name] = forms if error is None else {"error": error}
        runs_on_trio = "error" not in entry["loops"]["trio"]
        entry["needs_asyncio"] = not runs_on_trio
        peers[name] = entry
    peers["pybreaker"] = {
        "job": "breaker",
        "needs_asyncio": False,
        "note": "synchronous call(); call_async() needs tornado, which is not installed",
        "loops": {"sync": pybreaker_forms()},
    }

    ratios: dict[str, float] = {}
    reject_ratios: dict[str, float] = {}
    for name, entry in peers.items():
        success: list[float] = []
        rejects: list[float] = []
        for forms in entry["loops"].values():
            for form, figures in forms.items():
                if form == "error":
                    continue
                (rejects if form == "open_reject" else success).append(figures["overhead_us"])
        entry["best_overhead_us"] = min(success)
        entry["ours_same_job_us"] = ours_for_job[entry["job"]]
        ratios[name] = min(success) / ours_for_job[entry["job"]]
        if rejects:
            entry["best_open_reject_us"] = min(rejects)
            reject_ratios[name] = min(rejects) / our_reject

    stacks: dict[str, dict[str, Any]] = {}
    for loop_name in ("trio", "asyncio"):
        forms, error = run_on(loop_name, stack_forms)
        for stack, figures in (forms or {}).items():
            stacks.setdefault(stack, {})[loop_name] = figures["overhead_us"]
        if error is not None:
            stacks.setdefault("error", {})[loop_name] = error
    wrapped = mine["wrapped"]["overhead_us"]
    for stack, per_loop in stacks.items():
        if stack != "error":
            per_loop["ratio_vs_ours"] = min(v for v in per_loop.values()) / wrapped

    print(f"python {platform.python_version()}, trio {trio.__version__}, reps {REPS}")
    print(f"{'ours':<12} {'form':<22} {'overhead µs':>12} {'bare µs':>9}")
    for form, figures in mine.items():
        print(f"{'':<12} {form:<22} {figures['overhead_us']:>12.3f} {figures['bare_us']:>9.3f}")
    for name, entry in peers.items():
        for loop_name, forms in entry["loops"].items():
            if "error" in forms:
                print(f"{name:<12} ({loop_name}) cannot run: {forms['error']}")
                continue
            for form, figures in forms.items():
                label = f"{form} [{loop_name}]"
                overhead, bare = figures["overhead_us"], figures["bare_us"]
                print(f"{name:<12} {label:<22} {overhead:>12.3f} {bare:>9.3f}")
    for name in peers:
        print(f"ratio vs {name:<11} {ratios[name]:7.1f}x  ({peers[name]['job']})")
    for stack, per_loop in stacks.items():
        print(f"stack {stack}: {per_loop}")

    needs_asyncio = sorted(name for name, entry in peers.items() if entry["needs_asyncio"])
    result = {
        "wrapped_call_overhead_us": round(wrapped, 4),
        "open_reject_overhead_us": round(our_reject, 4),
        "overhead_ratio_vs": {k: round(v, 2) for k, v in ratios.items()},
        "open_reject_ratio_vs": {k: round(v, 2) for k, v in reject_ratios.items()},
        "ours": {k: round(v["overhead_us"], 4) for k, v in mine.items()},
        "ours_same_job_us": {k: round(v, 4) for k, v in ours_for_job.items()},
        "peers": peers,
        "stacks": stacks,
        "needs_asyncio": needs_asyncio,
        "method": (
            "overhead = median over reps of (wrapped - bare) per call; ratio = peer's "
            "cheapest form for its job / our cheapest form for the same job"
        ),
        "reps": REPS,
        "python": platform.python_version(),
        "trio": trio.__version__,
        "runtime_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(_rounded(result), separators=(",", ":")))


def _rounded(value: Any) -> Any:
    """``value`` with every float rounded to 4 decimals, for a readable last line."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    main()
