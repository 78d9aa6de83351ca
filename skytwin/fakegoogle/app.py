"""The fake Google as a lean raw ASGI app: route, authenticate, inject faults, handle, log.

Raw ASGI rather than Quart keeps a request to a few dict look-ups, so one
process can play Google for thousands of simulated users in the benchmark.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

import trio

from skytwin.fakegoogle import calendar_api, gmail_api, oauth_api
from skytwin.fakegoogle.faults import Fault
from skytwin.fakegoogle.protocol import ApiError, ApiRequest, ApiResponse, Handler, error_body
from skytwin.fakegoogle.world import RequestRecord, World

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: its HTTP method, path template (as in the discovery document) and handler."""

    method: str
    template: str
    api: str
    operation: str
    handler: Handler
    resource_param: str | None = None

    @property
    def segments(self) -> tuple[str, ...]:
        """The template split on "/" (without the leading slash)."""
        return tuple(self.template.strip("/").split("/"))


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/gmail/v1/users/{userId}/profile",
        "gmail",
        "gmail.users.getProfile",
        gmail_api.get_profile,
    ),
    Route(
        "GET",
        "/gmail/v1/users/{userId}/history",
        "gmail",
        "gmail.users.history.list",
        gmail_api.list_history,
    ),
    Route(
        "GET",
        "/gmail/v1/users/{userId}/messages",
        "gmail",
        "gmail.users.messages.list",
        gmail_api.list_messages,
    ),
    Route(
        "GET",
        "/gmail/v1/users/{userId}/messages/{id}",
        "gmail",
        "gmail.users.messages.get",
        gmail_api.get_message,
        "id",
    ),
    Route(
        "POST",
        "/gmail/v1/users/{userId}/messages/{id}/modify",
        "gmail",
        "gmail.users.messages.modify",
        gmail_api.modify_message,
        "id",
    ),
    Route(
        "GET",
        "/gmail/v1/users/{userId}/labels",
        "gmail",
        "gmail.users.labels.list",
        gmail_api.list_labels,
    ),
    Route(
        "POST",
        "/gmail/v1/users/{userId}/labels",
        "gmail",
        "gmail.users.labels.create",
        gmail_api.create_label,
    ),
    Route(
        "GET",
        "/calendar/v3/calendars/{calendarId}/events",
        "calendar",
        "calendar.events.list",
        calendar_api.list_events,
    ),
    Route(
        "GET",
        "/calendar/v3/calendars/{calendarId}/events/{eventId}",
        "calendar",
        "calendar.events.get",
        calendar_api.get_event,
        "eventId",
    ),
    Route(
        "PATCH",
        "/calendar/v3/calendars/{calendarId}/events/{eventId}",
        "calendar",
        "calendar.events.patch",
        calendar_api.patch_event,
        "eventId",
    ),
    Route("POST", "/token", "oauth", "oauth.token", oauth_api.token),
    Route("GET", "/o/oauth2/v2/auth", "oauth", "oauth.authorize", oauth_api.authorize),
)


class Router:
    """Matches a path against the route templates, segment by segment."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self._by_length: dict[int, list[Route]] = {}
        for route in routes:
            self._by_length.setdefault(len(route.segments), []).append(route)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, path parameters, whether the path exists under another method)."""
        parts = path.strip("/").split("/")
        other_method = False
        for route in self._by_length.get(len(parts), ()):
            params: dict[str, str] = {}
            for want, got in zip(route.segments, parts, strict=True):
                if want.startswith("{"):
                    if not got:
                        break
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                if route.method == method:
                    return route, params, False
                other_method = True
        return None, {}, other_method


def _json_bytes(body: dict[str, Any] | None) -> bytes:
    return b"" if body is None else json.dumps(body, separators=(",", ":")).encode()


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise trio.BrokenResourceError("client went away")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _sleep_unless_disconnected(receive: Receive, seconds: float) -> bool:
    """Sleep like a slow backend; False if the client hung up first (as real servers notice)."""
    with trio.move_on_after(seconds):
        while (await receive())["type"] != "http.disconnect":
            pass
        return False
    return True


def make_app(world: World) -> ASGIApp:
    """The ASGI app serving `world`."""
    router = Router(ROUTES)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await _handle_http(world, router, scope, receive, send)

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(world: World, send: Send, response: ApiResponse) -> None:
    body = _json_bytes(response.body)
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"date", format_datetime(world.now().astimezone(UTC), usegmt=True).encode()),
        *response.headers,
    ]
    if response.body is not None:
        headers.append((b"content-type", b"application/json; charset=UTF-8"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Send) -> None:
    # Headers promise a body that never comes: the client sees the connection die.
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4096")]}
    )


def _fault_response(fault: Fault, api: str) -> ApiResponse:
    status = fault.status or 500
    headers = [(b"retry-after", fault.retry_after.encode())] if fault.retry_after else []
    if api == "oauth" and status < 500 and status != 429:
        body: dict[str, Any] = {
            "error": fault.oauth_error or "invalid_request",
            "error_description": "injected fault",
        }
    elif status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="https://accounts.google.com/"'))
        body = error_body(401, "Request had invalid authentication credentials.", "authError")
    else:
        body = error_body(status, "injected fault", "backendError")
    return ApiResponse(status, body, headers)


def _unauthenticated() -> ApiResponse:
    return ApiResponse(
        401,
        error_body(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            "authError",
        ),
        [(b"www-authenticate", b'Bearer realm="https://accounts.google.com/"')],
    )


async def _handle_http(
    world: World, router: Router, scope: Scope, receive: Receive, send: Send
) -> None:
    at = trio.current_time()
    method: str = scope["method"]
    path: str = scope["path"]
    query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    route, params, other_method = router.match(method, path)
    operation = route.operation if route else "unknown"
    api = route.api if route else "unknown"
    email: str | None = None
    resource: str | None = None
    note = ""
    body = b""

    def record(status: int) -> None:
        # Logged before the answer goes out, so a client that has its answer sees the record.
        kept = body if method in ("POST", "PATCH") and api != "oauth" else b""
        world.log.append(
            RequestRecord(
                at, method, path, api, operation, email, resource, query, status, note, kept
            )
        )

    try:
        body = await _read_body(receive)
    except trio.BrokenResourceError:
        note = "client-gone"
        record(0)
        return
    if route is None:
        status = 405 if other_method else 404
        record(status)
        await _respond(
            world, send, ApiResponse(status, error_body(status, "Not Found", "notFound"))
        )
        return
    headers = dict(scope["headers"])
    request = ApiRequest(method, path, query, body, params, headers)
    if route.resource_param is not None:
        resource = params[route.resource_param]

    # Authenticate: API calls by bearer token, the token endpoint by what it is asked about.
    if api in ("gmail", "calendar"):
        auth = headers.get(b"authorization", b"")
        grant = world.grant_for(auth[7:].decode("latin-1")) if auth[:7] == b"Bearer " else None
        if grant is None:
            record(401)
            await _respond(world, send, _unauthenticated())
            return
        email = grant.email
        request.grant = grant
        request.account = world.accounts[grant.email]
    elif operation == "oauth.token":
        email = oauth_api.token_account(world, request)

    fault = world.take_fault(api, email, operation, resource)
    if fault is not None:
        if fault.delay_s > 0 and not await _sleep_unless_disconnected(receive, fault.delay_s):
            note = "client-gone"
            record(0)
            return
        if fault.drop and not fault.after_handling:
            note = "dropped"
            record(0)
            await _drop(send)
            return
        if fault.status is not None:
            note = "fault"
            record(fault.status)
            await _respond(world, send, _fault_response(fault, api))
            return

    try:
        response = route.handler(world, request)
    except ApiError as exc:
        response = ApiResponse(exc.status, error_body(exc.status, exc.message, exc.reason))
    except Exception:  # a bug in the fake: answer 500 and let the tests see it
        world.errors.append(traceback.format_exc())
        response = ApiResponse(500, error_body(500, "fake google crashed", "backendError"))
    if response.status < 400:
        world.calls[(operation, resource or email or "")] += 1
        world.run_hooks(operation)
    if fault is not None and fault.drop:  # after_handling: the change stands, the answer is lost
        note = "dropped"
        record(0)
        await _drop(send)
        return
    record(response.status)
    await _respond(world, send, response)
