"""``python -m skytwin user …``: add users, list them, issue API tokens."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from .config import Settings
from .store import Pool, users

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class CliError(Exception):
    """A command failed for a reason the user can fix; the message says how."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_parsers(sub: Any) -> None:
    """Register ``user add|list|token``."""
    user = sub.add_parser("user", help="manage users and their API tokens")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_sub.add_parser("add", help="add a user and print their API token once")
    add.add_argument("--email", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--admin", action="store_true", help="the token may call operator endpoints")
    add.add_argument("--json", action="store_true", help='print {"user_id": …, "token": …}')
    lst = user_sub.add_parser("list", help="list users")
    lst.add_argument("--json", action="store_true")
    tok = user_sub.add_parser("token", help="issue a new API token for a user")
    tok.add_argument("--email", required=True)
    tok.add_argument("--admin", action="store_true")
    tok.add_argument("--json", action="store_true")


def validate(args: argparse.Namespace) -> None:
    """Reject bad arguments before touching the database."""
    email = getattr(args, "email", None)
    if email is not None and not _EMAIL.match(email.strip()):
        raise CliError(f"--email must be an email address, not {email!r}", exit_code=2)
    name = getattr(args, "name", None)
    if name is not None and not 1 <= len(name.strip()) <= 200:
        raise CliError("--name must be 1 to 200 characters", exit_code=2)


async def run_user_command(pool: Pool, settings: Settings, args: argparse.Namespace) -> str:
    """Carry out ``user …``; return what to print."""
    try:
        async with pool.connection() as conn:
            async with conn.transaction():
                if args.user_command == "add":
                    user = await users.create_user(conn, args.email, args.name)
                    token = await users.issue_token(conn, user.id, label="cli", is_admin=args.admin)
                    return _token_output(args, user, token)
                if args.user_command == "token":
                    user = await users.get_user_by_email(conn, args.email)
                    token = await users.issue_token(conn, user.id, label="cli", is_admin=args.admin)
                    return _token_output(args, user, token)
                everyone = await users.list_users(conn)
    except (users.UserExists, users.UnknownUser) as exc:
        raise CliError(str(exc)) from None
    if args.json:
        return json.dumps(
            [
                {
                    "user_id": u.id,
                    "email": u.email,
                    "name": u.name,
                    "created_at": u.created_at.isoformat(),
                }
                for u in everyone
            ]
        )
    if not everyone:
        return "no users yet: python -m skytwin user add --email E --name N"
    return "\n".join(f"{u.id}\t{u.email}\t{u.name}" for u in everyone)


def _token_output(args: argparse.Namespace, user: users.User, token: str) -> str:
    if args.json:
        return json.dumps({"user_id": user.id, "token": token})
    return (
        f"user {user.id} <{user.email}>\n"
        f"token: {token}\n"
        "Keep this token: it is shown only now (SkyTwin stores its hash)."
    )
