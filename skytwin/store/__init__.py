"""SkyTwin's PostgreSQL store: a trio-native psycopg connection, a small pool,
transactions with serialization retry, migrations, and plain query functions."""

from .connection import TrioConnection
from .database import DatabaseCheck, check_database, open_database
from .errors import DatabaseUnavailable, MigrationError, PoolTimeout, StoreError
from .migrate import apply_migrations, load_migrations
from .pool import Connection, Pool, PoolStats
from .transaction import transaction

__all__ = [
    "Connection",
    "DatabaseCheck",
    "DatabaseUnavailable",
    "MigrationError",
    "Pool",
    "PoolStats",
    "PoolTimeout",
    "StoreError",
    "TrioConnection",
    "apply_migrations",
    "check_database",
    "load_migrations",
    "open_database",
    "transaction",
]
