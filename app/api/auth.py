"""Who may call the API and how much: named tokens, per-token request rates and daily spend limits, and
the rule that keeps a server able to rent real GPUs off the network unless it asks for a token.

- A token arrives as `Authorization: Bearer <token>` or `X-API-Key: <token>` and is compared in constant
  time with every configured one (API_TOKEN is the token named "default"; API_TOKENS adds named ones).
- A token's `rate` ("60/minute") counts every authenticated request it makes, in a moving window
  (the `limits` library, in this process's memory), or with replicas on, in the database for all
  replicas together (`rate_counters`, a sliding-window estimate; app.jobs.claims.SharedRates).
- A token's `daily_spend_usd` is checked when a job is submitted: the GPU cost recorded on the jobs it
  submitted since 00:00 UTC. Jobs already running finish, so the day's spend can pass the limit by the cost
  of the jobs in flight when it was reached.
Every refusal is a 401 or 429 whose message says which limit and when to try again (`Retry-After`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import limits
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from app.config import ApiToken, Settings
from app.errors import ConfigError

log = logging.getLogger(__name__)
DAY_S = 86400.0


class Refused(Exception):
    """A request the gate turns away: the HTTP status, a message naming the limit, response headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def utc_day_start(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


class TokenGate:
    """The configured tokens and their limits. With no token configured the API is open and every
    caller is anonymous (None)."""

    def __init__(self, tokens: list[ApiToken], *, clock: Callable[[], float] = time.time) -> None:
        self._tokens = [(t.token.get_secret_value().encode(), t) for t in tokens]
        self._clock = clock
        self._rates = {t.name: limits.parse(t.rate) for t in tokens if t.rate}
        self._limiter = MovingWindowRateLimiter(MemoryStorage()) if self._rates else None
        # Replicas: rates counted in the database by every replica together (app.jobs.claims.SharedRates)
        self.shared = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenGate:
        return cls(settings.api_token_list())

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def authenticate(self, bearer: str | None, api_key: str | None) -> ApiToken | None:
        """The caller's token, from `Authorization: Bearer` (first) or `X-API-Key` (None when the API is
        open). Refused(401) when it is missing or wrong."""
        if not self._tokens:
            return None
        given = (bearer or "").strip() or (api_key or "").strip() or None
        match: ApiToken | None = None
        if given is not None:
            raw = given.encode()
            for secret, token in self._tokens:  # no early exit: the time taken does not say which matched
                if hmac.compare_digest(raw, secret):
                    match = token
        if match is None:
            raise Refused(
                401,
                "missing or wrong bearer token: send `Authorization: Bearer <token>` or `X-API-Key: <token>`",
                {"WWW-Authenticate": "Bearer"},
            )
        return match

    async def check_rate(self, token: ApiToken | None) -> None:
        """Count one request of `token`; Refused(429) when it is over its rate."""
        if token is None or self._limiter is None or token.name not in self._rates:
            return
        item = self._rates[token.name]
        if self.shared is not None:
            ok, wait_s = await self.shared.hit(token.name, item.amount, item.get_expiry())
            if ok:
                return
            retry = max(1, math.ceil(wait_s))
        elif await self._limiter.hit(item, token.name):
            return
        else:
            stats = await self._limiter.get_window_stats(item, token.name)
            retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise Refused(
            429,
            f"token {token.name!r} is over its request rate of {token.rate}: retry in {retry} s",
            {"Retry-After": str(retry)},
        )

    async def check_budget(
        self, token: ApiToken | None, spend_since: Callable[[str, float], Awaitable[float]]
    ) -> None:
        """Refused(429) when `token` has reached its daily spend limit (UTC day)."""
        if token is None or token.daily_spend_usd is None:
            return
        now = self._clock()
        day = utc_day_start(now)
        spent = await spend_since(token.name, day)
        if spent < token.daily_spend_usd:
            return
        retry = max(1, math.ceil(day + DAY_S - now))
        raise Refused(
            429,
            f"token {token.name!r} reached its daily spend limit: ${spent:.4f} of "
            f"${float(token.daily_spend_usd):.2f} spent on jobs submitted since 00:00 UTC; new jobs are "
            f"accepted again after 00:00 UTC (in {retry // 3600} h {retry % 3600 // 60} min)",
            {"Retry-After": str(retry)},
        )


# --- where `serve` may listen ---------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so it is not known to be loopback


def check_listen_policy(settings: Settings, host: str) -> None:
    """ConfigError when `serve` would listen beyond loopback with no API token while a real provider is
    configured: anyone reaching the address could rent GPUs on the account. ALLOW_UNAUTHENTICATED=true
    accepts that risk explicitly (logged)."""
    provider = settings.effective_provider
    if provider == "sim" or is_loopback(host) or settings.api_token_list():
        return
    if settings.allow_unauthenticated:
        log.warning(
            "listening on %s without an API token while renting real GPUs (%s): ALLOW_UNAUTHENTICATED is set",
            host,
            provider,
        )
        return
    raise ConfigError(
        f"refusing to listen on {host} without an API token: with a real provider ({provider}) configured, "
        "anyone who can reach this address could rent GPUs on your account. Set API_TOKEN (or "
        "API_TOKENS), listen on 127.0.0.1, or set ALLOW_UNAUTHENTICATED=true to accept the risk"
    )
