"""``python -m skytwin connect google --email E --refresh-token T``: headless account connection."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .cli_users import CliError
from .config import Settings
from .connectors.errors import ConnectorError, NeedsReauthorization
from .crypto import TokenCipher, load_or_create_key
from .pipeline.connect import ConnectError, connect_with_refresh_token
from .pipeline.google import open_google
from .store import Pool, users
from .store.connections import PgTokenRepository


def add_parsers(sub: Any) -> None:
    """Register ``connect google``."""
    connect = sub.add_parser("connect", help="connect an account headlessly")
    providers = connect.add_subparsers(dest="provider", metavar="PROVIDER", required=True)
    google = providers.add_parser(
        "google",
        help="connect a Google account with a refresh token",
        description="Store a Google refresh token for a user (encrypted at rest). The token is "
        "checked with Google first; its account must be --email. Pass the token with "
        "--refresh-token, or in SKYTWIN_REFRESH_TOKEN to keep it out of the process list.",
    )
    google.add_argument("--email", required=True, help="the Google account's address")
    google.add_argument("--refresh-token", help="the OAuth refresh token")
    google.add_argument("--user", help="the SkyTwin user's email (default: the same as --email)")
    google.add_argument(
        "--no-verify", action="store_true", help="store without asking Google (offline set-up)"
    )
    google.add_argument("--json", action="store_true")


def refresh_token_from(args: argparse.Namespace) -> str:
    """The refresh token from the flag or the environment, or a usage error."""
    token = args.refresh_token or os.environ.get("SKYTWIN_REFRESH_TOKEN")
    if not token or not token.strip():
        raise CliError("give --refresh-token T (or set SKYTWIN_REFRESH_TOKEN)", exit_code=2)
    return token.strip()


async def run_connect(pool: Pool, settings: Settings, args: argparse.Namespace) -> str:
    """Carry out ``connect google``; return what to print (never the token)."""
    refresh_token = refresh_token_from(args)
    cipher = TokenCipher(load_or_create_key(settings.home, settings.secret_key))
    async with pool.connection() as conn:
        try:
            user = await users.get_user_by_email(conn, args.user or args.email)
        except users.UnknownUser as exc:
            raise CliError(f"{exc}; add them first: python -m skytwin user add") from None
    async with open_google(settings, PgTokenRepository(pool, cipher)) as google:
        try:
            connected = await connect_with_refresh_token(
                pool,
                cipher,
                google,
                user_id=user.id,
                refresh_token=refresh_token,
                verify=not args.no_verify,
                account_email=args.email,
            )
        except NeedsReauthorization:
            raise CliError("Google refused this refresh token (invalid_grant)") from None
        except ConnectError as exc:
            raise CliError(str(exc)) from None
        except ConnectorError as exc:
            raise CliError(
                f"could not check the token with Google: {exc} "
                "(retry later, or pass --no-verify to store it unchecked)"
            ) from None
    if args.json:
        return json.dumps(
            {
                "connection_id": connected.connection_id,
                "user_id": connected.user_id,
                "account_email": connected.account_email,
            }
        )
    return (
        f"connected {connected.account_email} to user {user.email} "
        f"(connection {connected.connection_id}); a running SkyTwin picks it up "
        "within one poll interval"
    )
