"""Bearer-token authentication: the user always comes from the token.

Every route under ``/api`` except health declares itself with ``@authenticated``;
the handler reads the caller from ``current_principal()``. A body that names a
user is never consulted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from quart import g, request

from ..store import users
from .errors import ApiError
from .state import current_state

P = ParamSpec("P")
R = TypeVar("R")


class Unauthorized(ApiError):
    """Missing or wrong credentials."""

    status = 401


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Unauthorized("missing Authorization: Bearer <token> header")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


def bearer_token_or_none() -> str | None:
    """The bearer token if an Authorization header was sent (401 if malformed)."""
    if "Authorization" not in request.headers:
        return None
    return _bearer_token()


def authenticated(
    handler: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Require a valid bearer token; the principal is then ``current_principal()``."""

    @wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        token = _bearer_token()
        async with current_state().pool.connection() as conn:
            principal = await users.principal_for_token(conn, token)
        if principal is None:
            raise Unauthorized("invalid or revoked token")
        g.principal = principal
        return await handler(*args, **kwargs)

    wrapper.__dict__["skytwin_authenticated"] = True
    return wrapper


def current_principal() -> users.Principal:
    """The caller of the current request (only inside ``@authenticated`` handlers)."""
    principal: users.Principal = g.principal
    return principal


