"""Command line: ``python -m skytwin [run | migrate]``.

Exit codes: 0 success or clean shutdown, 1 a fatal runtime error (one
``skytwin.fatal`` log line says what), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import structlog
import trio

from . import __version__
from .app import AlreadyRunning, home_lock
from .app import run as run_app
from .config import ConfigError, Settings
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
    sub.add_parser("migrate", help="apply database migrations and exit")
    return parser


def leaf_exception(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _migrate(settings: Settings) -> None:
    async with open_database(settings, migrate=False) as pool:
        applied = await apply_migrations(pool)
    log.info("skytwin.migrated", applied=applied)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"skytwin: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)

    try:
        with home_lock(settings.home):
            if command == "migrate":
                trio.run(_migrate, settings)
            else:
                trio.run(run_app, settings)
    except AlreadyRunning as exc:
        log.error("skytwin.fatal", error=str(exc))
        return 1
    except BaseException as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        leaf = leaf_exception(exc)
        if isinstance(leaf, KeyboardInterrupt):
            return 130
        if isinstance(leaf, SystemExit):
            raise leaf from None
        log.error(
            "skytwin.fatal",
            error=f"{type(leaf).__name__}: {leaf}",
            hint=_hint(leaf),
            exc_info=not isinstance(leaf, (StoreError, OSError)),
        )
        return 1
    return 0


def _hint(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno == 98:
        return "the address in SKYTWIN_BIND is already in use"
    if isinstance(exc, StoreError):
        return "check SKYTWIN_DATABASE_URL and that PostgreSQL is reachable"
    return None


if __name__ == "__main__":
    sys.exit(main())
