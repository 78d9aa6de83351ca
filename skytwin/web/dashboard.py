"""The dashboard: one static page at ``/`` and its assets under ``/static/``.

Plain HTML, CSS and JavaScript shipped in the package (no build step). The page
holds no data of its own: it signs in with an API token the user pastes (kept
in ``sessionStorage``, sent only as a bearer header) and reads everything from
the JSON API. The Content-Security-Policy allows only this origin's own
scripts, styles and requests, so even a mistake that let server data reach
markup could not run it.
"""

from __future__ import annotations

from quart import Blueprint, Response

blueprint = Blueprint(
    "dashboard", __name__, static_folder="static", static_url_path="/static"
)

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)


@blueprint.get("/")
async def index() -> Response:
    """The dashboard page."""
    response = await blueprint.send_static_file("index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response


# Headers on every answer (web/serve.py's liveness fast path sends them too).
EVERY_ANSWER_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@blueprint.after_app_request
async def security_headers(response: Response) -> Response:
    """Every answer: no sniffing, no framing, no referrer; pages get the CSP."""
    for name, value in EVERY_ANSWER_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response

