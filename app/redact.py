"""Secret redaction at the edges: log records, error messages, job records.

Secrets are registered once (from `Settings.secret_values()` and per-instance tokens) and any text that
leaves the process through a logger or a stored error is passed through `redact()`.
"""

from __future__ import annotations

import logging
import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
_MASK = "***"
# Bearer tokens and key=value pairs that look like credentials, even if not registered.
_PATTERNS = [
    re.compile(r"(?i)(authorization:\s*bearer\s+)[^\s'\"]+"),
    re.compile(r"(?i)((?:api_key|token|secret|password|hf_token)=)[^&\s'\"]+"),
    # a presigned URL's signature and credential scope (R2 model mirror, result URLs): a bearer credential
    re.compile(r"(?i)((?:x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&\s'\"]+"),
]


def register_secret(value: str | None) -> None:
    """Remember a secret so `redact` masks it everywhere. Very short values are ignored (too noisy)."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    if not text:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, _MASK)
    for pat in _PATTERNS:
        text = pat.sub(lambda m: m.group(1) + _MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """Logging filter that rewrites every record's final message through `redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not kill logging
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


NOISY_LOGGERS = (
    "asyncssh",
    "httpx",
    "httpcore",
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "aiohttp.access",
)


def setup_logging(level: str = "INFO") -> None:
    """Configure root logging once, with redaction on every handler."""
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter())
        root.addHandler(handler)
    root.setLevel(level.upper())
    # Third-party libraries log every connection and request at INFO (asyncssh was two thirds of `serve`'s
    # log): WARNING for them unless LOG_LEVEL=DEBUG asks for everything.
    quiet = logging.NOTSET if level.upper() == "DEBUG" else logging.WARNING
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
