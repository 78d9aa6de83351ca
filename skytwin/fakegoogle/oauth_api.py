"""OAuth 2.0 endpoints: the token endpoint and an auto-consenting authorization endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

import trio

from skytwin.fakegoogle.protocol import ApiRequest, ApiResponse
from skytwin.fakegoogle.world import AUTH_CODE_TTL_S, AuthCode, World

_NO_STORE = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]


def _oauth_error(status: int, error: str, description: str) -> ApiResponse:
    return ApiResponse(status, {"error": error, "error_description": description}, list(_NO_STORE))


def invalid_grant(description: str = "Token has been expired or revoked.") -> ApiResponse:
    """The answer for a revoked, expired or unknown grant."""
    return _oauth_error(400, "invalid_grant", description)


def token_account(world: World, request: ApiRequest) -> str | None:
    """The account a token request is about (for faults and the log), if the fake knows it."""
    form = request.form()
    if form.get("grant_type") == "refresh_token":
        return world.refresh_tokens.get(form.get("refresh_token", ""))
    code = world.auth_codes.get(form.get("code", ""))
    return code.email if code is not None else None


def _client_ok(world: World, request: ApiRequest, form: dict[str, str]) -> bool:
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    basic = request.headers.get(b"authorization", b"")
    if basic.lower().startswith(b"basic "):
        try:
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        except ValueError:
            return False
    return hmac.compare_digest(client_id, world.client_id) and hmac.compare_digest(
        secret, world.client_secret
    )


def token(world: World, request: ApiRequest) -> ApiResponse:
    """POST /token: grant_type refresh_token or authorization_code (with PKCE)."""
    form = request.form()
    if not _client_ok(world, request, form):
        return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
    grant_type = form.get("grant_type")
    if grant_type == "refresh_token":
        old = form.get("refresh_token", "")
        email = world.refresh_tokens.get(old)
        if email is None:
            return invalid_grant()
        account = world.account(email)
        body = {
            "access_token": world.mint_access_token(email, account.scopes),
            "expires_in": int(world.access_token_ttl_s) - 1,
            "scope": " ".join(sorted(account.scopes)),
            "token_type": "Bearer",
        }
        if world.rotate_refresh_tokens:
            del world.refresh_tokens[old]
            account.refresh_tokens.discard(old)
            body["refresh_token"] = world.issue_refresh_token(email)
        return ApiResponse(200, body, list(_NO_STORE))
    if grant_type == "authorization_code":
        return _exchange_code(world, form)
    return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")


def _exchange_code(world: World, form: dict[str, str]) -> ApiResponse:
    # A code is single-use whatever happens next.
    code = world.auth_codes.pop(form.get("code", ""), None)
    if code is None or trio.current_time() >= code.expires_at:
        return invalid_grant("Malformed auth code.")
    if form.get("redirect_uri") != code.redirect_uri:
        return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
    if code.code_challenge is not None:
        verifier = form.get("code_verifier")
        if not verifier:
            return invalid_grant("Missing code verifier.")
        if code.challenge_method == "S256":
            digest = hashlib.sha256(verifier.encode("ascii")).digest()
            computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        else:
            computed = verifier
        if not hmac.compare_digest(computed, code.code_challenge):
            return invalid_grant("Invalid code verifier.")
    account = world.account(code.email)
    account.scopes = account.scopes | code.scopes
    body: dict[str, object] = {
        "access_token": world.mint_access_token(code.email, code.scopes),
        "expires_in": int(world.access_token_ttl_s) - 1,
        "scope": " ".join(sorted(code.scopes)),
        "token_type": "Bearer",
    }
    if code.offline:
        body["refresh_token"] = world.issue_refresh_token(code.email)
    return ApiResponse(200, body, list(_NO_STORE))


def authorize(world: World, request: ApiRequest) -> ApiResponse:
    """GET /o/oauth2/v2/auth: consent at once and redirect back with a code and the state."""
    client_id = request.arg("client_id")
    redirect_uri = request.arg("redirect_uri")
    if client_id != world.client_id:
        return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
    if not redirect_uri:
        return _oauth_error(400, "invalid_request", "Missing required parameter: redirect_uri")
    if request.arg("response_type") != "code":
        return _oauth_error(400, "unsupported_response_type", "Only response_type=code")
    scopes = frozenset((request.arg("scope") or "").split())
    if not scopes:
        return _oauth_error(400, "invalid_request", "Missing required parameter: scope")
    method = request.arg("code_challenge_method") or "plain"
    if method not in ("S256", "plain"):
        return _oauth_error(400, "invalid_request", "Invalid code_challenge_method")
    hint = (request.arg("login_hint") or "").lower()
    email = hint if hint in world.accounts else next(iter(world.accounts), None)
    if email is None:
        return _oauth_error(400, "invalid_request", "No account to consent with")
    code = world.new_auth_code(
        AuthCode(
            email=email,
            client_id=client_id,
            redirect_uri=redirect_uri,
            code_challenge=request.arg("code_challenge"),
            challenge_method=method,
            scopes=scopes,
            offline=request.arg("access_type") == "offline",
            expires_at=trio.current_time() + AUTH_CODE_TTL_S,
        )
    )
    params = {"code": code, "scope": " ".join(sorted(scopes))}
    state = request.arg("state")
    if state is not None:
        params["state"] = state
    separator = "&" if "?" in redirect_uri else "?"
    location = f"{redirect_uri}{separator}{urlencode(params)}"
    return ApiResponse(302, None, [(b"location", location.encode())])
