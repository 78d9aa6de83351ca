"""Schemathesis fuzzes every operation of the OpenAPI description against the live app.

The app runs as in the other API tests (real PostgreSQL, real HTTP on
loopback) with the live pipeline beside it (fake Google, Google client,
poller), so the status and OAuth routes take their real paths. Schemathesis
runs as its own process (its command line is its stable interface, and it
stays clear of this test's Trio loop): positive and negative data, the
examples, coverage and fuzzing phases, a bounded number of examples per
operation and a fixed seed. Any 5xx fails the run; its JUnit report must name
every described operation, so an operation cannot silently drop out.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import h11
import pytest
import trio

from skytwin.fakegoogle import World
from skytwin.web.openapi import OPENAPI_PATH, openapi_spec

from .conftest import Api
from .live import live_pipeline

MAX_EXAMPLES = 25
SEED = 20260131
RUN_DEADLINE_S = 120.0
EMAIL = "ada@example.com"
HEADERS_TO_BODY_S = 0.05
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


def schemathesis_command(base_url: str, token: str, report: Path) -> list[str]:
    """The command line of one bounded, reproducible schemathesis run."""
    executable = Path(sys.executable).with_name("schemathesis")
    return [
        str(executable), "run", f"{base_url}{OPENAPI_PATH}",
        "--header", f"Authorization: Bearer {token}",
        # No 5xx; and every status, content type and body is one the description names.
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing",
        "--mode", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "4",
        "--request-timeout", "10",
        "--report", "junit", "--report-junit-path", str(report),
    ]


async def seed_data(api: Api, token: str) -> None:
    """Signals, approval requests and an execution, so ids 1.. exist and lists are not empty."""
    async with api.client(token) as client:
        for n in range(1, 4):
            response = await client.post("/api/events/ingest", json={
                "source": "gmail", "id": f"m-{n}", "type": "newsletter",
                "data": {"messageId": f"m-{n}", "from": "news@x.io", "subject": f"Digest {n}"},
            })
            assert response.status_code == 201
        # One approved request, so an execution exists for GET /api/executions/{id}.
        approved = await client.post("/api/approvals/1/respond", json={"action": "approve"})
        assert approved.status_code == 202


async def test_fuzzing_every_operation_finds_no_server_error(api: Api, tmp_path: Path) -> None:
    user_id, token = await api.new_user(EMAIL, admin=True)
    world = World()
    world.add_account(EMAIL)
    world.add_message(EMAIL, sender="news@x.io", subject="Weekly newsletter")
    api.state.respond_wait_s = 0.1  # no executor here: an approval answers 202 at once
    async with live_pipeline(api, world, poll_interval_s=0.5) as live:
        await live.connect(user_id, EMAIL)
        await seed_data(api, token)
        report = tmp_path / "junit.xml"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
        with trio.fail_after(RUN_DEADLINE_S):
            result = await trio.run_process(
                schemathesis_command(api.base_url, token, report),
                capture_stdout=True, capture_stderr=True, check=False, env=env,
                cwd=tmp_path,  # its Hypothesis database and reports stay out of the repository
            )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    assert result.returncode == 0, output

    tested = {case.get("name", "") for case in ET.parse(report).getroot().iter("testcase")}
    described = {
        f"{method.upper()} {path}"
        for path, item in openapi_spec()["paths"].items()
        for method in item
        if path != OPENAPI_PATH  # schemathesis does not test the document it was given
    }
    assert described <= tested, f"operations not fuzzed: {sorted(described - tested)}\n{output}"


def exchange(sock: socket.socket, connection: h11.Connection, method: str, path: str,
             body: bytes) -> int:
    """Send one request on a kept-alive connection and read its answer (blocking)."""
    headers = [("Host", "skytwin"), ("Content-Type", "application/json"),
               ("Content-Length", str(len(body)))]
    # Headers, then the body: two writes, as Python's http.client (and requests) send them.
    sock.sendall(connection.send(h11.Request(method=method, target=path, headers=headers)))
    if body:
        # A slow upload: give the server time to answer before the body arrives (a
        # server that answers early must still read the body before reusing the connection).
        select.select([sock], [], [], HEADERS_TO_BODY_S)
    sock.sendall(connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage()))
    status = 0
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            connection.start_next_cycle()
            return status


async def test_a_keep_alive_connection_survives_answers_that_ignore_the_body(api: Api) -> None:
    """Found by the fuzzer: a request after an answer sent before its body was read hung."""
    ignored = [
        ("POST", "/api/events/ingest", 401),  # refused before the body is read
        ("POST", "/api/approvals/not-a-number/respond", 404),
        ("PUT", "/api/status", 405),
    ]
    body = b'{"action": "reject", "reason": "' + b"x" * 2000 + b'"}'
    host, port = api.base_url.removeprefix("http://").rsplit(":", 1)

    def client() -> list[int]:
        # A blocking client on its own thread, as in real life (not a task of the server's loop).
        statuses = []
        with socket.create_connection((host, int(port)), timeout=3.0) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = h11.Connection(h11.CLIENT)
            for _ in range(12):
                for method, path, _status in ignored:
                    statuses.append(exchange(sock, connection, method, path, body))
                    statuses.append(exchange(sock, connection, "GET", "/api/health/live", b""))
        return statuses

    statuses = await trio.to_thread.run_sync(client)
    assert statuses == [s for _, _, status in ignored for s in (status, 200)] * 12


INGEST = b'{"source": "gmail", "id": "m-1", "type": "newsletter", %s}'
UNSTORABLE = "must not contain NUL (\\u0000) or unpaired surrogate characters"


@pytest.mark.parametrize(
    ("path", "raw", "error", "fields"),
    [
        # Each of these was a 500 before: undecodable bytes, NaN (jsonb refuses it), NUL and
        # lone surrogates (text and jsonb refuse them), an offset PostgreSQL refuses.
        ("/api/events/ingest", b'{"source": "\xb7"}', "body is not valid JSON", None),
        ("/api/events/ingest", INGEST % b'"data": {"x": NaN}', "body is not valid JSON", None),
        ("/api/events/ingest", b"[" * 5000 + b"]" * 5000, "body is not valid JSON", None),
        ("/api/events/ingest", INGEST % b'"data": {"k": "a\\u0000b"}', "invalid request",
         {"data": UNSTORABLE}),
        ("/api/events/ingest", INGEST % b'"data": {"\\u0000": 1}', "invalid request",
         {"data": UNSTORABLE}),
        ("/api/events/ingest", b'{"source": "gmail", "id": "\\ud800", "type": "x"}',
         "invalid request", {"id": UNSTORABLE}),
        ("/api/events/ingest", INGEST % b'"occurred_at": "9999-12-31T23:59:59-23:59"',
         "invalid request", {"occurred_at": None}),
        ("/api/approvals/1/respond", b'{"action": "reject", "reason": "no\\u0000"}',
         "invalid request", {"reason": UNSTORABLE}),
    ],
)
async def test_bodies_the_database_cannot_store_are_refused_with_400(
    api: Api, path: str, raw: bytes, error: str, fields: dict[str, str | None] | None
) -> None:
    _, token = await api.new_user("ann@example.com")
    async with api.client(token) as client:
        response = await client.post(
            path, content=raw, headers={"Content-Type": "application/json"}
        )
        answer = response.json()
        assert response.status_code == 400, answer
        assert answer["error"] == error
        if fields is not None:
            assert set(answer["fields"]) == set(fields)
            assert all(answer["fields"][k] == v for k, v in fields.items() if v is not None)
        # Nothing was written.
        listed = await client.get("/api/signals")
    assert listed.json()["signals"] == []


async def test_an_offset_postgresql_refuses_is_stored_in_utc(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    async with api.client(token) as client:
        response = await client.post("/api/events/ingest", json={
            "source": "gmail", "id": "m-1", "type": "notification",
            "occurred_at": "2026-01-31T09:00:00+23:00",
        })
        assert response.status_code == 201, response.text
        [signal] = (await client.get("/api/signals")).json()["signals"]
    assert signal["occurred_at"] == "2026-01-30T10:00:00+00:00"
