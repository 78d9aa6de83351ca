"""The Quart-Trio application factory."""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from . import (
    approvals_api,
    dashboard,
    health,
    metrics_route,
    oauth_routes,
    openapi,
    signals_api,
    status_api,
)
from .errors import install_error_handlers
from .state import WebState


def create_app(state: WebState) -> QuartTrio:
    """Build the app around ``state``; no I/O happens here."""
    # No app-level static route: it would shadow the dashboard blueprint's /static/.
    app = QuartTrio("skytwin", static_folder=None)
    app.config["SKYTWIN"] = state
    app.config["MAX_CONTENT_LENGTH"] = 1 * 1024 * 1024
    app.config["JSON_SORT_KEYS"] = False
    install_error_handlers(app)
    app.after_request(drain_request_body)
    metrics_route.install_request_counter(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(signals_api.blueprint)
    app.register_blueprint(approvals_api.blueprint)
    app.register_blueprint(status_api.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(dashboard.blueprint)
    app.register_blueprint(oauth_routes.blueprint)
    app.register_blueprint(metrics_route.blueprint)
    return app


async def drain_request_body(response: Response) -> Response:
    """Read the rest of the request body before answering, so the connection can be reused.

    Hypercorn recycles a keep-alive connection only once it has the whole request
    body; an answer sent without reading it (a 401, a 404, a handler that takes no
    body) could leave the client's next request on that connection unanswered.
    A body that cannot be read (too large, too slow) closes the connection instead.
    """
    try:
        await request.get_data(cache=True)
    except HTTPException:
        response.headers["Connection"] = "close"
    return response
