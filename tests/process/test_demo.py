"""``python -m skytwin demo`` end to end: three accounts, failures absorbed, approvals waiting."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from skytwin.demo import DOWN, FLAKY, HEALTHY

from .harness import start_skytwin, wait_for

pytestmark = pytest.mark.slow


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        assert match, line
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def test_demo_shows_signals_retries_a_breaker_cycle_and_pending_approvals(tmp_path: Path) -> None:
    st = start_skytwin(
        tmp_path / "home", "demo",
        "--poll-interval-s", "0.5", "--mail-every-s", "1", "--outage-s", "30",
        "--breaker-open-s", "2",
    )
    try:
        st.wait_event("skytwin.demo_ready", timeout=30)
        assert st.proc.stdout is not None
        token = ""
        for line in st.proc.stdout:
            if "Sign-in token:" in line:
                token = line.split("Sign-in token:")[1].strip()
                break
        assert token.startswith("st_")
        client = httpx.Client(
            base_url=st.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=5
        )

        def accounts() -> dict[str, dict]:
            body = client.get("/api/status").json()
            return {a["account_email"]: a for a in body["accounts"]}

        def breaker_went_round() -> bool:
            text = client.get("/metrics").text
            return (
                metric(text, "skytwin_breaker_transitions_total", to_state="open") >= 1
                and metric(text, "skytwin_breaker_transitions_total", to_state="closed") >= 1
                and accounts()[DOWN]["breaker"]["state"] == "closed"
            )

        wait_for(breaker_went_round, timeout=90, interval=0.5)
        wait_for(
            lambda: all(a["polling"]["signals_new"] > 0 for a in accounts().values()), timeout=30
        )
        assert set(accounts()) == {HEALTHY, FLAKY, DOWN}
        pending = client.get("/api/approvals/pending").json()["approvals"]
        assert len(pending) >= 1
        text = client.get("/metrics").text
        assert metric(text, "skytwin_retries_scheduled_total") > 0
        assert metric(text, "skytwin_polls_total", result="ok") > 0
        assert metric(text, "skytwin_signals_ingested_total") > 0
        assert metric(text, "skytwin_http_requests_total", route="/api/status", status="200") > 0
        signals = client.get("/api/signals", params={"limit": 500}).json()["signals"]
        assert {s["source"] for s in signals} == {"gmail", "calendar"}

        started = time.monotonic()
        st.signal(signal.SIGINT)
        assert st.wait_exit(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        st.stop()
