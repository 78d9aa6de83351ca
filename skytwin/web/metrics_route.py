"""``GET /metrics`` and the request counter behind ``skytwin_http_requests``."""

from __future__ import annotations

from quart import Blueprint, Quart, Response, request

from .state import current_state

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
async def metrics() -> Response:
    """Prometheus text format; empty (but 200) when metrics are not enabled."""
    state = current_state()
    body = state.metrics.render() if state.metrics is not None else b""
    return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")


def install_request_counter(app: Quart) -> None:
    """Count every answered request by method, route template and status."""

    @app.after_request
    async def count(response: Response) -> Response:
        state = current_state()
        if state.metrics is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            state.metrics.on_request(request.method, rule, response.status_code)
        return response
