"""A pair of counters over a sliding time window, kept in fixed slices.

Used by the retry budget (calls, retries) and the breaker's failure rate (calls,
failures). Adding is O(1) and allocation-free; reading sums ``slices`` cells. The
window is approximate by at most one slice (``window_s / slices``): a count leaves
the window when its whole slice has aged out.
"""

from __future__ import annotations

__all__ = ["SlidingPair"]


class SlidingPair:
    """Two counters (``first``, ``second``) over the last ``window_s`` seconds."""

    __slots__ = ("_first", "_second", "_slice_s", "_slices", "_stamp")

    def __init__(self, window_s: float, slices: int = 10) -> None:
        if window_s <= 0 or slices < 1:
            raise ValueError("window_s must be > 0 and slices >= 1")
        self._slice_s = window_s / slices
        self._slices = slices
        # _stamp[i] is the absolute slice index whose counts cell i holds.
        self._stamp = [-(2**62)] * slices
        self._first = [0] * slices
        self._second = [0] * slices

    def add(self, now: float, first: int = 0, second: int = 0) -> None:
        """Count ``first`` and ``second`` at time ``now``."""
        index = int(now // self._slice_s)
        cell = index % self._slices
        if self._stamp[cell] != index:
            self._stamp[cell] = index
            self._first[cell] = first
            self._second[cell] = second
        else:
            self._first[cell] += first
            self._second[cell] += second

    def totals(self, now: float) -> tuple[int, int]:
        """Both counts within the window that ends at ``now``."""
        oldest = int(now // self._slice_s) - self._slices + 1
        first = second = 0
        for cell in range(self._slices):
            if self._stamp[cell] >= oldest:
                first += self._first[cell]
                second += self._second[cell]
        return first, second

    def clear(self) -> None:
        """Forget everything counted so far."""
        self._stamp = [-(2**62)] * self._slices
