"""SkyTwin's Google connectors: Gmail and Calendar sync, actions, OAuth tokens.

Modules, each a room of its own:

- `signals`: the `Signal` record, `SyncResult`, and the pure classification rules;
- `api`: `make_google_client()`, `GoogleApi` (base URL, retry policy, per-API budget)
  and `call_api`, the one place HTTP errors become connector errors;
- `oauth`: PKCE, the consent URL, `OAuthClient`, `AccessTokenManager`,
  `TokenRepository` (+ `InMemoryTokenRepository`) and sealing tokens for storage;
- `gmail`: `sync_gmail` and the label actions; `calendar`: `sync_calendar` and
  `respond_to_invite`;
- `errors`: the exception hierarchy.

Nothing here reads settings or persists anything: callers pass clients, URLs
and cursors in, and commit the signals and the new cursor themselves.
"""
