"""The one small interface every result store satisfies, and the store's typed errors.

Keeping the interface to put/head/url/delete lets the job runner not care whether results land in R2
or in a local directory, and lets the cache be written once on top of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from app.errors import ComfyfleetError

MAX_KEY_BYTES = 1024  # S3's limit
_META_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class StoreError(ComfyfleetError):
    """Storing or reading a result failed. Messages name the bucket/key, never a credential."""


class StoreAuthError(StoreError):
    """The store refused the credentials or the token lacks permission. Fix R2_ACCESS_KEY_ID/SECRET."""


class BucketMissing(StoreError):
    """The configured bucket does not exist. Create it or fix R2_BUCKET."""


class StoreUnavailable(StoreError):
    """The store could not be reached or answered 5xx after retries. Trying later may work."""

    retryable = True


class InvalidKey(StoreError):
    """A key that could escape the store's namespace (`..`, absolute, NUL) or is too long."""


class ObjectMissing(StoreError):
    """A key that should exist (e.g. a file to upload) does not."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str = ""


@runtime_checkable
class Store(Protocol):
    """A place results go to and come back from as URLs."""

    async def put(self, path: Path, key: str, content_type: str, metadata: dict[str, str]) -> StoredObject:
        """Upload the file at `path` (streamed, never read whole into memory) under `key`."""
        ...

    async def head(self, key: str) -> StoredObject | None:
        """The object's size/type/metadata, or None when it does not exist."""
        ...

    async def url(self, key: str) -> str:
        """A URL a browser can GET now (public URL, or a fresh presigned one)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...


def validate_key(key: str) -> str:
    """Refuse keys that are empty, absolute, contain `.`/`..`/empty segments, backslashes or NUL.

    Both backends apply the same rule so a key that works locally works on R2 and the local file server
    can never be walked out of its root.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key is empty")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key longer than {MAX_KEY_BYTES} bytes")
    if "\x00" in key or "\\" in key or key.startswith("/"):
        raise InvalidKey(f"object key {key[:80]!r} is absolute or contains NUL/backslash")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidKey(f"object key {key[:80]!r} has an empty, '.' or '..' segment")
    return key


def validate_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """User metadata travels as HTTP headers (`x-amz-meta-*`): lowercase names, printable ASCII values.

    S3 lowercases names and mangles non-ASCII values, so refusing them here keeps round-trips exact on
    every backend. S3 caps all user metadata at 2 KB.
    """
    out: dict[str, str] = {}
    total = 0
    for name, value in metadata.items():
        if not _META_NAME.match(name):
            raise StoreError(f"metadata name {name!r} must be lowercase letters, digits and '-'")
        value = str(value)
        if not all(32 <= ord(c) < 127 for c in value):
            raise StoreError(f"metadata {name!r} must be printable ASCII")
        total += len(name) + len(value)
        out[name] = value
    if total > 2048:
        raise StoreError(f"metadata is {total} bytes; S3 allows 2048")
    return out
