"""Result cache: the same request (workflow version, parameters with a concrete seed, image bytes) never
costs GPU time twice, and identical requests arriving together share one GPU run.

Objects live in the store under content-addressed keys, so a hit survives a lost job database; the job
table (a succeeded job with the same key) supplies the full result when it is there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from app.jobs.ports import maybe_await


def cache_key(workflow: str, graph_sha256: str, params: dict[str, Any], image_sha256: str) -> str:
    """Everything that determines the output; `params` must carry the resolved seed."""
    blob = json.dumps(
        {"workflow": workflow, "graph": graph_sha256, "params": params, "image": image_sha256},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def video_key(key: str) -> str:
    return f"results/{key}/video.mp4"


def frame_key(key: str) -> str:
    return f"results/{key}/last_frame.png"


@dataclass
class CachedObjects:
    video_url: str
    last_frame_url: str | None
    video_size_bytes: int | None


def _size_of(head: Any) -> int | None:
    if head is None:
        return None
    for attr in ("size", "content_length", "size_bytes"):
        v = getattr(head, attr, None)
        if v is None and isinstance(head, dict):
            v = head.get(attr)
        if v is not None:
            return int(v)
    return None


async def lookup(store: Any, key: str) -> CachedObjects | None:
    """HEAD the stored video (and frame); a hit returns fresh URLs (presigned ones expire)."""
    head = await maybe_await(store.head(video_key(key)))
    if head is None:
        return None
    frame_head = await maybe_await(store.head(frame_key(key)))
    return CachedObjects(
        video_url=await maybe_await(store.url(video_key(key))),
        last_frame_url=await maybe_await(store.url(frame_key(key))) if frame_head is not None else None,
        video_size_bytes=_size_of(head),
    )


class Coalescer:
    """At most one GPU run per cache key at a time; the others wait for its outcome."""

    def __init__(self) -> None:
        self._leaders: dict[str, asyncio.Future] = {}

    def claim(self, key: str) -> asyncio.Future | None:
        """None = you lead (run it, then `finish`); else a future resolving to True (leader stored the
        result) or False (leader failed: try yourself)."""
        fut = self._leaders.get(key)
        if fut is not None and not fut.done():
            return fut
        self._leaders[key] = asyncio.get_running_loop().create_future()
        return None

    def finish(self, key: str, ok: bool) -> None:
        fut = self._leaders.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(ok)

    def in_flight(self) -> int:
        return len(self._leaders)
