"""Vast.ai-style rate limiting: a minimum interval between calls per endpoint and identity, plus a daily
search quota (reference vastai.md §5). Off unless the emulator is given thresholds."""

from __future__ import annotations

import datetime as dt
import time

# Seconds between calls per endpoint (OA `x-rate-limit` thresholds; unit assumed to be seconds).
REAL_THRESHOLDS: dict[str, float] = {
    "create": 4.5,
    "destroy": 3.0,
    "manage": 1.0,
    "show": 2.0,
    "list": 1.0,
    "ssh_keys": 1.0,
    "ssh": 2.0,
    "search": 6.0,  # "10 requests/minute"
}


class RateLimiter:
    def __init__(self, thresholds: dict[str, float] | None, search_quota: int | None) -> None:
        self.thresholds = dict(thresholds or {})
        self.search_quota = search_quota
        self._last: dict[tuple[str, str], float] = {}
        self._searches: dict[tuple[str, str], int] = {}

    def check(self, route: str, identity: str) -> float | None:
        """None if the call may proceed, else the threshold (seconds) it violated."""
        threshold = self.thresholds.get(route)
        if not threshold:
            return None
        now = time.monotonic()
        last = self._last.get((route, identity))
        if last is not None and now - last < threshold:
            return threshold
        self._last[(route, identity)] = now
        return None

    def remaining(self, route: str, identity: str) -> float:
        last = self._last.get((route, identity))
        threshold = self.thresholds.get(route, 0.0)
        return max(0.0, threshold - (time.monotonic() - last)) if last is not None else 0.0

    def take_search(self, identity: str) -> int | None:
        """None if under today's quota, else the epoch second it resets (next UTC midnight)."""
        if self.search_quota is None:
            return None
        today = dt.datetime.now(dt.UTC).date()
        key = (identity, today.isoformat())
        used = self._searches.get(key, 0)
        if used >= self.search_quota:
            midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
            return int(midnight.timestamp())
        self._searches[key] = used + 1
        return None
