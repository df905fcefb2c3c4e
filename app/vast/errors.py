"""Typed Vast.ai failures, and the one pure function that turns an HTTP answer into one of them.

Callers decide by type, never by parsing messages: `OfferUnavailable` -> try the next offer,
`RateLimited` -> wait `retry_after`, `AuthError`/`InsufficientCredit` -> stop and tell the user,
`CreateAmbiguous` -> look the instance up by label before anything else (money is at stake).
Every message goes through `app.redact.redact`, so a key echoed back by a server cannot leak.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from app.errors import ComfyfleetError
from app.redact import redact

_OFFER_GONE_CODES = re.compile(r"\b(3603|3907)\b")


class VastError(ComfyfleetError):
    """Anything that went wrong talking to Vast.ai (or the emulator)."""


class VastApiError(VastError):
    """Vast.ai answered with an error. `status` is the HTTP status, `error`/`msg` come from the body."""

    hint = ""  # what the user can do about it, appended to the message

    def __init__(self, status: int, error: str | None, msg: str, *, retryable: bool | None = None) -> None:
        self.status = status
        self.error = error
        self.msg = redact(msg or "")
        code = f" {error}" if error else ""
        text = f"Vast.ai API error {status}{code}: {self.msg}".rstrip(": ")
        super().__init__(f"{text} ({self.hint})" if self.hint else text, retryable=retryable)


class OfferUnavailable(VastApiError):
    """The offer was rented by someone else (or vanished) between search and create: try the next one."""


class InsufficientCredit(VastApiError):
    """The account cannot pay for this rental. Add credit on console.vast.ai."""

    hint = "add credit on console.vast.ai"


class AuthError(VastApiError):
    """The API key is missing, wrong, revoked or lacks permission. Check VAST_API_KEY."""

    hint = "check VAST_API_KEY"


class RateLimited(VastApiError):
    """Too many requests; `retry_after` seconds (may be None when the server did not say)."""

    retryable = True

    def __init__(self, status: int, error: str | None, msg: str, retry_after: float | None) -> None:
        super().__init__(status, error, msg, retryable=True)
        self.retry_after = retry_after


class SearchQuotaExceeded(VastApiError):
    """The daily offer-search quota is used up; it resets at `reset_at` (epoch). Never retried."""

    def __init__(self, status: int, error: str | None, msg: str, reset_at: float | None) -> None:
        super().__init__(status, error, msg, retryable=False)
        self.reset_at = reset_at


class InvalidResponse(VastApiError):
    """The answer does not have the documented shape (e.g. a list that is not a list). Never 'empty'."""


class VastTransportError(VastError):
    """The request did not complete (connection refused, timeout, dropped). Retryable for reads."""

    retryable = True


class CreateAmbiguous(VastError):
    """A create PUT may or may not have rented a GPU (timeout, 5xx, connection dropped after sending).

    The caller must look the instance up by its label before retrying anything.
    """

    retryable = False

    def __init__(self, label: str, cause: str) -> None:
        super().__init__(f"create of {label!r} has an unknown outcome ({redact(cause)})")
        self.label = label
        self.cause = redact(cause)


class InstanceFailed(VastError):
    """An instance will not become usable (bad state, no SSH, deadline). The caller destroys it."""

    def __init__(
        self,
        instance_id: str,
        reason: str,
        *,
        status: str | None = None,
        machine_id: str | None = None,
        machine_fault: bool = True,
    ) -> None:
        super().__init__(f"instance {instance_id} failed: {redact(reason)}", retryable=True)
        self.instance_id = instance_id
        self.reason = redact(reason)
        self.status = status
        self.machine_id = machine_id
        # True when the host is to blame (do not rent this machine again).
        self.machine_fault = machine_fault


class NoOffers(VastError):
    """No offer matches the requirements. Loosen VAST_* settings (price, GPU names, regions, ...)."""


def _parse_body(text: str) -> Mapping[str, Any] | None:
    try:
        body = json.loads(text)
    except (ValueError, TypeError):
        return None
    return body if isinstance(body, Mapping) else None


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) or `X-RateLimit-Reset` (epoch)."""
    now = time.time() if now is None else now
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    reset = headers.get("x-ratelimit-reset") or headers.get("X-RateLimit-Reset")
    if reset:
        try:
            val = float(reset.strip())
        except ValueError:
            return None
        # Small numbers are a delay in seconds, large ones an epoch timestamp.
        return max(0.0, val - now) if val > 1e9 else max(0.0, val)
    return None


def classify(
    status: int,
    text: str,
    headers: Mapping[str, str] | None = None,
    *,
    op: str = "",
    now: float | None = None,
) -> VastApiError:
    """Map a non-2xx answer (or a 2xx with `success: false`) to the most specific error type.

    `op` is the logical call ("create", "search", ...): 404/410 mean "offer gone" only for create.
    """
    headers = headers or {}
    body = _parse_body(text)
    error = None
    msg = ""
    if body is not None:
        err = body.get("error")
        error = str(err) if err not in (None, "") else None
        msg = str(body.get("msg") or body.get("message") or body.get("detail") or "")
    else:
        msg = (text or "").strip()[:500]
    lowered = f"{error or ''} {msg}".lower()

    if error == "search_quota_exceeded" or "search_quota_exceeded" in lowered:
        reset = headers.get("x-ratelimit-reset") or headers.get("X-RateLimit-Reset")
        reset_at: float | None
        try:
            reset_at = float(reset) if reset else None
        except ValueError:
            reset_at = None
        return SearchQuotaExceeded(
            status, "search_quota_exceeded", msg or "daily search quota used", reset_at
        )
    if status == 429 or error == "rate_limit_exceeded" or "too frequent" in lowered:
        return RateLimited(
            status, error, msg or "API requests too frequent", retry_after_seconds(headers, now)
        )
    if error == "auth_error" or "invalid user key" in lowered:
        if status in (401, 403, 404) or status < 400:
            return AuthError(status, error, msg or "invalid API key")
    if status == 401:
        return AuthError(status, error, msg or "unauthorized")
    if error == "insufficient_credit" or "insufficient credit" in lowered or "insufficient funds" in lowered:
        return InsufficientCredit(status, error, msg or "insufficient credit")
    if "no_such_ask" in lowered or _OFFER_GONE_CODES.search(msg or ""):
        return OfferUnavailable(status, error or "no_such_ask", msg or "offer is no longer available")
    if op == "create" and status in (404, 410):
        return OfferUnavailable(status, error, msg or "offer is no longer available")
    return VastApiError(status, error, msg or f"HTTP {status}", retryable=status >= 500)
