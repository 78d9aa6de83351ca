"""Errors raised by ``skytwin.store``.

Hierarchy::

    StoreError                      anything the store cannot do
    ├── DatabaseUnavailable         cannot connect, or the connection broke
    ├── PoolTimeout                 no connection could be had before the acquire deadline
    └── MigrationError              a migration file failed; names the file

psycopg errors are translated here at the boundary with ``raise … from exc``;
SQL errors that are the caller's business (unique violations, say) pass through
as psycopg's own types.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class for store failures."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached or the connection to it broke."""


class PoolTimeout(StoreError):
    """No connection became free before the acquire deadline."""


class MigrationError(StoreError):
    """A migration could not be applied."""
