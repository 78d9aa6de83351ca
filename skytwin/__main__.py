"""Command line: ``python -m skytwin [run | demo | migrate | user … | connect google …]``.

Exit codes: 0 success or clean shutdown, 1 a fatal runtime error (one
``skytwin.fatal`` log line, or an ``error:`` line for CLI commands, says what),
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import structlog
import trio

from . import __version__, cli_connect, cli_users
from .app import AlreadyRunning, home_lock
from .app import run as run_app
from .config import ConfigError, Settings
from .crypto import SecretKeyError, key_from_env
from .demo import DemoOptions, run_demo
from .logs import configure_logging
from .store import StoreError, apply_migrations, open_database

log = structlog.get_logger("skytwin.cli")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m skytwin",
        description="SkyTwin: watches Gmail and Google Calendar, proposes actions, "
        "asks before acting. Configured through SKYTWIN_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"skytwin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the service (the default)")
    demo = sub.add_parser(
        "demo",
        help="run SkyTwin against a built-in fake Google with three demo accounts",
        description="Runs SkyTwin on its embedded PostgreSQL (under SKYTWIN_HOME/demo) "
        "against an in-process fake Google: a healthy, a flaky and a temporarily "
        "unreachable account, with new mail every few seconds. Prints the dashboard "
        "URL and a sign-in token.",
    )
    defaults = DemoOptions()
    demo.add_argument("--poll-interval-s", type=_positive, default=defaults.poll_interval_s)
    demo.add_argument("--mail-every-s", type=_positive, default=defaults.mail_every_s)
    demo.add_argument(
        "--outage-s",
        type=_positive,
        default=defaults.outage_s,
        help="how long the 'down' account's Google stays unreachable",
    )
    demo.add_argument("--breaker-open-s", type=_positive, default=defaults.breaker_open_s)
    sub.add_parser("migrate", help="apply database migrations and exit")
    cli_users.add_parsers(sub)
    cli_connect.add_parsers(sub)
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {text!r}")
    return value


def leaf_exception(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _migrate(settings: Settings, owner: bool) -> str:
    async with open_database(settings, migrate=False, owner=owner) as pool:
        applied = await apply_migrations(pool)
    log.info("skytwin.migrated", applied=applied)
    return f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")


async def _user(settings: Settings, owner: bool, args: argparse.Namespace) -> str:
    async with open_database(settings, owner=owner) as pool:
        return await cli_users.run_user_command(pool, settings, args)


async def _connect(settings: Settings, owner: bool, args: argparse.Namespace) -> str:
    async with open_database(settings, owner=owner) as pool:
        return await cli_connect.run_connect(pool, settings, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    try:
        settings = Settings.from_env()
        if settings.secret_key is not None:
            key_from_env(settings.secret_key)
        cli_users.validate(args)
    except (ConfigError, SecretKeyError) as exc:
        print(f"skytwin: configuration error: {exc}", file=sys.stderr)
        return 2
    except cli_users.CliError as exc:
        parser.print_usage(sys.stderr)
        print(f"skytwin: error: {exc}", file=sys.stderr)
        return exc.exit_code
    # One-shot commands answer on stdout; their log shows only what went wrong.
    configure_logging(
        settings.log_format,
        level=logging.INFO if command in ("run", "demo") else logging.WARNING,
    )

    try:
        if command == "run":
            with home_lock(settings.home):
                trio.run(run_app, settings)
            return 0
        if command == "demo":
            options = DemoOptions(
                poll_interval_s=args.poll_interval_s,
                mail_every_s=args.mail_every_s,
                outage_s=args.outage_s,
                breaker_open_s=args.breaker_open_s,
                breaker_open_max_s=4 * args.breaker_open_s,
            )
            with home_lock(settings.home / "demo"):
                trio.run(run_demo, settings, options)
            return 0
        # One-shot commands attach to the running service's database if there is one.
        with home_lock(settings.home, required=False) as owner:
            if command == "migrate":
                output = trio.run(_migrate, settings, owner)
            elif command == "connect":
                output = trio.run(_connect, settings, owner, args)
            else:
                output = trio.run(_user, settings, owner, args)
        print(output)
        return 0
    except AlreadyRunning as exc:
        log.error("skytwin.fatal", error=str(exc))
        return 1
    except BaseException as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        leaf = leaf_exception(exc)
        if isinstance(leaf, KeyboardInterrupt):
            return 130
        if isinstance(leaf, SystemExit):
            raise leaf from None
        if isinstance(leaf, cli_users.CliError):
            print(f"skytwin: error: {leaf}", file=sys.stderr)
            return leaf.exit_code
        log.error(
            "skytwin.fatal",
            error=f"{type(leaf).__name__}: {leaf}",
            hint=_hint(leaf),
            exc_info=not isinstance(leaf, (StoreError, OSError)),
        )
        return 1


def _hint(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno == 98:
        return "the address in SKYTWIN_BIND is already in use"
    if isinstance(exc, StoreError):
        return "check SKYTWIN_DATABASE_URL and that PostgreSQL is reachable"
    return None


if __name__ == "__main__":
    sys.exit(main())
