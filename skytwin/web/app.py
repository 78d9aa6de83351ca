"""The Quart-Trio application factory."""

from __future__ import annotations

from quart_trio import QuartTrio

from . import approvals_api, health, oauth_routes, signals_api
from .errors import install_error_handlers
from .state import WebState


def create_app(state: WebState) -> QuartTrio:
    """Build the app around ``state``; no I/O happens here."""
    app = QuartTrio("skytwin")
    app.config["SKYTWIN"] = state
    app.config["MAX_CONTENT_LENGTH"] = 1 * 1024 * 1024
    app.config["JSON_SORT_KEYS"] = False
    install_error_handlers(app)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(signals_api.blueprint)
    app.register_blueprint(approvals_api.blueprint)
    app.register_blueprint(oauth_routes.blueprint)
    return app
