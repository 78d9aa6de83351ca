"""Settings: one typed, frozen object built from ``SKYTWIN_*`` variables.

Nothing here runs at import; ``Settings.from_env()`` is called once by the entry
point and the result is passed down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

GMAIL_API_URL = "https://gmail.googleapis.com/gmail/v1"
CALENDAR_API_URL = "https://www.googleapis.com/calendar/v3"
OAUTH_TOKEN_URL = "https://oauth2.googleapis.com/token"
OAUTH_AUTH_URL = "https://accounts.google.com/o/oauth2/v2/auth"

DEFAULT_BIND = "127.0.0.1:8080"
DEFAULT_POLL_INTERVAL_S = 60.0


class ConfigError(ValueError):
    """A ``SKYTWIN_*`` variable has a value SkyTwin cannot use; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the process needs to know about its environment."""

    home: Path
    database_url: str | None
    bind_host: str
    bind_port: int
    gmail_api_url: str = GMAIL_API_URL
    calendar_api_url: str = CALENDAR_API_URL
    oauth_token_url: str = OAUTH_TOKEN_URL
    oauth_auth_url: str = OAUTH_AUTH_URL
    google_client_id: str | None = None
    google_client_secret: str | None = None
    secret_key: str | None = None
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    log_format: str | None = None  # None: JSON off a TTY, console on one
    shutdown_grace_s: float = 5.0
    db_check_timeout_s: float = 1.0

    @property
    def bind(self) -> str:
        """The ``host:port`` the web server listens on."""
        host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        return f"{host}:{self.bind_port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the ``SKYTWIN_*`` variables; raise ConfigError naming the bad one."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        home_raw = get("SKYTWIN_HOME")
        home = (
            Path(home_raw).expanduser()
            if home_raw
            else Path(platformdirs.user_data_dir("skytwin", appauthor=False))
        )
        host, port = parse_bind(get("SKYTWIN_BIND") or DEFAULT_BIND)

        log_format = get("SKYTWIN_LOG_FORMAT")
        if log_format is not None and log_format not in ("json", "console"):
            raise ConfigError(f"SKYTWIN_LOG_FORMAT must be 'json' or 'console', not {log_format!r}")

        poll = _positive_float(env, "SKYTWIN_POLL_INTERVAL_S", DEFAULT_POLL_INTERVAL_S)
        database_url = get("SKYTWIN_DATABASE_URL")
        if database_url is not None and not database_url.startswith(
            ("postgresql://", "postgres://", "host=", "dbname=")
        ):
            raise ConfigError(
                "SKYTWIN_DATABASE_URL must be a PostgreSQL URL (postgresql://user@host/db)"
            )

        return cls(
            home=home,
            database_url=database_url,
            bind_host=host,
            bind_port=port,
            gmail_api_url=_url(env, "SKYTWIN_GMAIL_API_URL", GMAIL_API_URL),
            calendar_api_url=_url(env, "SKYTWIN_CALENDAR_API_URL", CALENDAR_API_URL),
            oauth_token_url=_url(env, "SKYTWIN_OAUTH_TOKEN_URL", OAUTH_TOKEN_URL),
            oauth_auth_url=_url(env, "SKYTWIN_OAUTH_AUTH_URL", OAUTH_AUTH_URL),
            google_client_id=get("SKYTWIN_GOOGLE_CLIENT_ID"),
            google_client_secret=get("SKYTWIN_GOOGLE_CLIENT_SECRET"),
            secret_key=get("SKYTWIN_SECRET_KEY"),
            poll_interval_s=poll,
            log_format=log_format,
        )


def parse_bind(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and check the port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"SKYTWIN_BIND must look like host:port, not {value!r}")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"SKYTWIN_BIND has a bad port: {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"SKYTWIN_BIND port must be 0-65535, not {port}")
    return host, port


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be greater than 0, not {raw!r}")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s) URL, not {raw!r}")
    return raw.rstrip("/")
