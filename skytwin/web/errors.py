"""One JSON error handler for the whole app.

Errors and what they become:

* ``ApiError`` (and subclasses): a client error the handler raised on purpose;
  ``{"error": message, **details}`` with its status.
* ``werkzeug.exceptions.HTTPException`` (404, 405, 413, …): ``{"error": …}``.
* ``StoreError`` that means the database is away: 503.
* anything else: 500 ``{"error": "internal error"}``; the traceback goes to the
  log, never to the client.
"""

from __future__ import annotations

from typing import Any

import structlog
from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

from ..store import DatabaseUnavailable, PoolTimeout

log = structlog.get_logger("skytwin.web")


class ApiError(Exception):
    """A client-facing error with an HTTP status."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.details = details


def _json_error(status: int, message: str, **details: Any) -> Response:
    response = jsonify({"error": message, **details})
    response.status_code = status
    return response


def install_error_handlers(app: Quart) -> None:
    """Register the JSON error handlers on ``app``."""

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        response = _json_error(exc.status, exc.message, **exc.details)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="skytwin"'
        return response

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = (exc.name or "error").lower()
        if exc.description and status != 404:
            message = exc.description
        return _json_error(status, message)

    @app.errorhandler(DatabaseUnavailable)
    @app.errorhandler(PoolTimeout)
    async def database_away(exc: Exception) -> Response:
        log.warning("skytwin.request_database_unavailable", error=str(exc))
        response = _json_error(503, "database unavailable, try again shortly")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.error("skytwin.unhandled_error", error_type=type(exc).__name__, exc_info=exc)
        return _json_error(500, "internal error")
