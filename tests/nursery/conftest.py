"""Shared fixtures for the nursery tests: an event recorder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from skytwin.nursery import Event, add_hook


class Recorder(list[Event]):
    """Every event emitted while a test runs, in order."""

    def of(self, kind: type[Any]) -> list[Any]:
        """The recorded events of one type."""
        return [e for e in self if isinstance(e, kind)]


@pytest.fixture
def events() -> Iterator[Recorder]:
    recorder = Recorder()
    remove = add_hook(recorder.append)
    yield recorder
    remove()
