"""No token, code or client secret ever reaches a log line, an error message or a repr."""

from __future__ import annotations

import logging
import traceback
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog
from structlog.testing import capture_logs
from trio.testing import MockClock

from skytwin.connectors.calendar import sync_calendar
from skytwin.connectors.errors import ConnectorError
from skytwin.connectors.gmail import sync_gmail
from skytwin.connectors.oauth import code_challenge, new_code_verifier
from skytwin.fakegoogle import Fault
from skytwin.nursery import install_structlog_hook
from tests.fakegoogle.harness import CONNECTION_ID, EMAIL, Rig, virtual_now


async def test_no_secret_appears_in_any_log_line_or_error(
    rig: Rig, clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG/INFO
    world = rig.world
    verifier = new_code_verifier()
    errors: list[ConnectorError] = []
    unhook = install_structlog_hook()  # retries are logged as skytwin.retry_scheduled
    try:
        with capture_logs(processors=[structlog.processors.format_exc_info]) as events:
            response = await rig.http.get(
                rig.endpoints.oauth_auth_url,
                params={
                    "client_id": world.client_id,
                    "redirect_uri": "http://127.0.0.1:1/cb",
                    "response_type": "code",
                    "scope": "https://www.googleapis.com/auth/gmail.modify",
                    "code_challenge": code_challenge(verifier),
                    "code_challenge_method": "S256",
                    "access_type": "offline",
                },
            )
            code = parse_qs(urlsplit(response.headers["location"]).query)["code"][0]
            await rig.oauth.exchange_code(
                code=code, code_verifier=verifier, redirect_uri="http://127.0.0.1:1/cb"
            )
            world.add_message(EMAIL, sender="a@x.com", subject="hello")
            world.faults("gmail", EMAIL).add(Fault.error(503), Fault.dropped(), Fault.error(401))
            world.faults("oauth", EMAIL).add(Fault.error(500))
            first = await sync_gmail(rig.gmail(), rig.tokens(), None, now=virtual_now)
            world.expire_access_tokens(EMAIL)
            await sync_calendar(rig.calendar(), rig.tokens(), None, now=virtual_now)
            world.faults("calendar", EMAIL).add(*[Fault.error(503)] * 4)
            try:
                await sync_calendar(rig.calendar(), rig.tokens(), None, now=virtual_now)
            except ConnectorError as exc:
                errors.append(exc)
            world.revoke(EMAIL)
            try:
                await sync_gmail(rig.gmail(), rig.tokens(), first.cursor, now=virtual_now)
            except ConnectorError as exc:
                errors.append(exc)
    finally:
        unhook()

    texts = [repr(event) for event in events]
    texts += [record.getMessage() for record in caplog.records]
    texts += ["".join(traceback.format_exception(exc)) for exc in errors]
    texts += [repr(rig.tokens()), repr(rig.oauth), repr(rig.repository.rows[CONNECTION_ID])]
    secrets = [*world.secrets_issued, verifier]
    assert len(errors) == 2 and len(secrets) > 5
    assert {e["event"] for e in events} >= {
        "skytwin.token_refreshed",
        "skytwin.retry_scheduled",
        "skytwin.needs_reauthorization",
    }
    leaks = [(secret[:12], text[:120]) for secret in secrets for text in texts if secret in text]
    assert leaks == []
