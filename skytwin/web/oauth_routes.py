"""``/oauth/google/start`` and ``/oauth/google/callback``: connecting an account in a browser.

``start`` needs the signed-in user (bearer token) and answers with the consent
URL (the dashboard navigates to it; a token never travels in a URL). The
``state`` it embeds is random, stored hashed, bound to that user, single use
and valid for ten minutes; the PKCE verifier is stored encrypted beside it.
"""

from __future__ import annotations

from quart import Blueprint, Response, jsonify, redirect, request

from ..connectors.errors import ConnectorError, NeedsReauthorization
from ..pipeline.connect import ConnectError, finish_authorization, start_authorization
from .auth import authenticated, current_principal
from .errors import ApiError
from .state import current_state

blueprint = Blueprint("oauth", __name__)


def _redirect_uri() -> str:
    return request.host_url.rstrip("/") + "/oauth/google/callback"


@blueprint.get("/oauth/google/start")
@authenticated
async def start() -> Response:
    """The Google consent URL for the signed-in user."""
    state = current_state()
    if state.google is None or not state.settings.google_client_id:
        raise ApiError(
            "Google sign-in is not configured: set SKYTWIN_GOOGLE_CLIENT_ID and "
            "SKYTWIN_GOOGLE_CLIENT_SECRET",
            status=503,
        )
    url = await start_authorization(
        state.pool,
        state.cipher,
        state.google,
        user_id=current_principal().user_id,
        redirect_uri=_redirect_uri(),
        auth_url=state.settings.oauth_auth_url,
        client_id=state.settings.google_client_id,
    )
    return jsonify({"authorization_url": url})


@blueprint.get("/oauth/google/callback")
async def callback() -> Response:
    """Google sends the browser back here with a code and our state."""
    if request.args.get("error"):
        raise ApiError(f"Google sign-in was not completed: {request.args['error'][:100]}")
    code = request.args.get("code", "")
    state_value = request.args.get("state", "")
    missing = {n: "is required" for n, v in (("code", code), ("state", state_value)) if not v}
    if missing:
        raise ApiError("invalid request", fields=missing)
    state = current_state()
    if state.google is None:
        raise ApiError("Google sign-in is not configured", status=503)
    try:
        await finish_authorization(
            state.pool, state.cipher, state.google, state=state_value, code=code
        )
    except ConnectError as exc:
        raise ApiError(str(exc)) from None
    except NeedsReauthorization:
        raise ApiError("Google refused the authorization code; start again") from None
    except ConnectorError as exc:
        raise ApiError(f"Google could not be reached: {exc}", status=502) from None
    response: Response = redirect("/?connected=1")  # type: ignore[assignment]
    return response
