"""Bringing a stored object back to a local file (a story joins its segments' stored videos).

Backends that can read their own objects (`get_to_file`: the local store copies, R2 downloads with boto3)
do it directly; any other `Store` is read through its URL, streamed to disk. Never into memory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import httpx

from app.store.base import StoreError


async def fetch_object(store: Any, key: str, dest: Path, *, timeout_s: float = 60.0) -> int:
    """Write the object `key` to `dest`; returns its size. Raises StoreError when it cannot be read."""
    get = getattr(store, "get_to_file", None)
    if get is not None:
        return await get(key, dest)
    url = await store.url(key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    size = 0
    try:
        async with (
            httpx.AsyncClient(timeout=timeout_s, follow_redirects=True) as client,
            client.stream("GET", url) as resp,
        ):
            if resp.status_code != 200:
                raise StoreError(f"reading {key} back from the store failed: HTTP {resp.status_code}")
            with tmp.open("wb") as fh:
                async for chunk in resp.aiter_bytes(1 << 20):
                    fh.write(chunk)
                    size += len(chunk)
        os.replace(tmp, dest)
    except httpx.HTTPError as exc:
        raise StoreError(
            f"reading {key} back from the store failed: {type(exc).__name__}", retryable=True
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return size
