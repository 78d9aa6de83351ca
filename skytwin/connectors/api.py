"""Calling a Google API over HTTP: the client, one retried and authorized call, error translation.

Every call goes through `call_api`: it takes the connection's access token,
sends the request through `skytwin.nursery.retry_call` (policy and per-API
budget from the `GoogleApi`), and translates whatever goes wrong into
`skytwin.connectors.errors` at this one boundary. A 401 forces exactly one
token refresh and one more try. Deadlines belong to the caller: a cancel
scope around `call_api` cancels the request in flight and is never retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from skytwin.connectors.errors import (
    ConnectorError,
    GoogleUnavailable,
    NotFound,
    PermanentApiError,
)
from skytwin.nursery import Retryable, RetryBudget, RetryPolicy, classify_httpx, retry_call

GMAIL_API_URL = "https://gmail.googleapis.com/gmail/v1"
CALENDAR_API_URL = "https://www.googleapis.com/calendar/v3"
# The reference behaviour: 3 retries, base 1 s, cap 30 s, jittered.
DEFAULT_POLICY = RetryPolicy(attempts=4, base_delay_s=1.0, cap_s=30.0, jitter="full")
# Google also rate-limits with 403 and these reasons; its docs say to back off and retry.
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_MAX_MESSAGE_CHARS = 200


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: Google's APIs need no cookie."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Ignore ``Set-Cookie``."""

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        """Keep nothing."""


class CookielessClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that never stores or sends a cookie.

    One client serves every user: a cookie Google set in one account's answer
    must never ride along on another account's request. It also saves the work
    httpx does per response to look for cookies.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("cookies"):
            raise ValueError("this client keeps no cookies")
        super().__init__(**kwargs)
        self._cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        """Always empty."""
        return self._cookies

    @cookies.setter
    def cookies(self, value: Any) -> None:
        raise ValueError("this client keeps no cookies")


def make_google_client(
    *,
    connect_s: float = 5.0,
    read_s: float = 20.0,
    write_s: float = 10.0,
    pool_s: float = 5.0,
    max_connections: int = 100,
    max_keepalive_connections: int = 20,
    keepalive_expiry_s: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An AsyncClient for Google with explicit timeouts and pool limits (close it when done)."""
    return CookielessClient(
        timeout=httpx.Timeout(connect=connect_s, read=read_s, write=write_s, pool=pool_s),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=keepalive_expiry_s,
        ),
        headers={"user-agent": "skytwin/0.1", "accept": "application/json"},
        transport=transport,
        follow_redirects=False,
    )


class AccessTokens(Protocol):
    """Where `call_api` gets bearer tokens; `oauth.AccessTokenManager` is the real one."""

    async def access_token(self) -> str:
        """A token valid for a while yet."""
        ...

    async def force_refresh(self, rejected: str) -> str:
        """A token other than `rejected`, which Google just refused."""
        ...


@dataclass(frozen=True, slots=True)
class GoogleApi:
    """One Google API as SkyTwin calls it: where, over which client, retried how.

    Share one instance (and so one `RetryBudget`) per API across all users.
    """

    client: httpx.AsyncClient
    base_url: str
    target: str
    policy: RetryPolicy = DEFAULT_POLICY
    budget: RetryBudget | None = None

    @classmethod
    def gmail(
        cls,
        client: httpx.AsyncClient,
        *,
        base_url: str = GMAIL_API_URL,
        policy: RetryPolicy = DEFAULT_POLICY,
        budget: RetryBudget | None = None,
    ) -> GoogleApi:
        """The Gmail API (target "gmail")."""
        return cls(client, base_url.rstrip("/"), "gmail", policy, budget)

    @classmethod
    def calendar(
        cls,
        client: httpx.AsyncClient,
        *,
        base_url: str = CALENDAR_API_URL,
        policy: RetryPolicy = DEFAULT_POLICY,
        budget: RetryBudget | None = None,
    ) -> GoogleApi:
        """The Calendar API (target "calendar")."""
        return cls(client, base_url.rstrip("/"), "calendar", policy, budget)


class _Unauthorized(ConnectorError):
    """401 from an API: handled by `call_api` with one forced refresh, never by retry_call."""


def google_error(response: httpx.Response) -> tuple[str, str]:
    """(reason, message) from Google's JSON error body, tolerating any body at all."""
    try:
        body = response.json()
    except ValueError:
        return "http_" + str(response.status_code), ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):  # the OAuth endpoints' shape: {"error": "invalid_grant", ...}
        return error, str(body.get("error_description", ""))[:_MAX_MESSAGE_CHARS]
    if not isinstance(error, dict):
        return "http_" + str(response.status_code), ""
    message = str(error.get("message", ""))[:_MAX_MESSAGE_CHARS]
    details = error.get("errors")
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("reason", "unknown")), message
    return str(error.get("status", "unknown")), message


def raise_for_response(response: httpx.Response, operation: str, *, bearer: bool) -> None:
    """Raise the connector error for a non-2xx response, with the retry verdict attached.

    `bearer` says the request carried an access token, so a 401 means that token
    was refused (a refresh may help) rather than, say, bad client credentials.
    """
    status = response.status_code
    if status < 300:
        return
    reason, message = google_error(response)
    if status == 401 and bearer:
        raise _Unauthorized(f"{operation}: HTTP 401 {reason}")
    # classify_httpx owns the retryable statuses and Retry-After parsing; ask it.
    status_error = httpx.HTTPStatusError(
        f"HTTP {status}", request=response.request, response=response
    )
    verdict = classify_httpx(status_error)
    if verdict is None and status == 403 and reason in _RATE_LIMIT_REASONS:
        verdict = Retryable(f"status_403_{reason}")
    if verdict is not None:
        raise GoogleUnavailable(
            f"{operation}: HTTP {status} {reason}", status=status, retryable=verdict
        ) from status_error
    if status == 404:
        raise NotFound(status, reason, message) from status_error
    raise PermanentApiError(status, reason, message) from status_error


def decode_json(response: httpx.Response, operation: str) -> dict[str, Any]:
    """The JSON object of a 2xx response; a garbled one counts as transient."""
    if not response.content:
        return {}
    try:
        body = response.json()
    except ValueError as exc:
        raise GoogleUnavailable(
            f"{operation}: response is not JSON", retryable=Retryable("invalid_json")
        ) from exc
    if not isinstance(body, dict):
        raise GoogleUnavailable(f"{operation}: response is not a JSON object")
    return body


async def send_once(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    operation: str,
    *,
    bearer: bool,
    **kwargs: Any,
) -> dict[str, Any]:
    """One HTTP exchange, translated: a JSON object, or a connector error with its verdict."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        # Only the type: httpx messages may quote URLs, and nothing more is needed to act.
        raise GoogleUnavailable(
            f"{operation}: {type(exc).__name__}", retryable=classify_httpx(exc)
        ) from exc
    raise_for_response(response, operation, bearer=bearer)
    return decode_json(response, operation)


async def _call_with_retries(
    api: GoogleApi,
    token: str,
    method: str,
    url: str,
    operation: str,
    params: Any,
    body: dict[str, Any] | None,
) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}"}

    async def attempt() -> dict[str, Any]:
        return await send_once(
            api.client,
            method,
            url,
            operation,
            bearer=True,
            params=params,
            json=body,
            headers=headers,
        )

    return await retry_call(attempt, policy=api.policy, target=api.target, budget=api.budget)


async def call_api(
    api: GoogleApi,
    tokens: AccessTokens,
    method: str,
    path: str,
    *,
    operation: str,
    params: list[tuple[str, str]] | dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send one authorized request to `api` (retried per its policy) and return the JSON object."""
    url = api.base_url + path
    token = await tokens.access_token()
    try:
        return await _call_with_retries(api, token, method, url, operation, params, body)
    except _Unauthorized:
        pass  # the token died early (revoked session, clock skew): refresh once, below
    token = await tokens.force_refresh(token)
    try:
        return await _call_with_retries(api, token, method, url, operation, params, body)
    except _Unauthorized as exc:
        raise PermanentApiError(
            401, "unauthorized", f"{operation} refused a freshly refreshed token"
        ) from exc
