"""The content-addressed result cache: the same request twice costs GPU time once.

What goes into a cache key (`cache_key`), and nothing else:
- `workflow`: the workflow name, and `graph_sha256`: the hash of its graph + manifest (its version), so
  editing a workflow invalidates its results;
- `params`: the normalised request parameters (`WorkflowParams.normalized()`), minus `seed` (the seed is
  a separate field so the same params can also be keyed without it). Floats with an integral value are
  written as integers so 5 and 5.0 give the same key;
- `image_sha256`: the sha256 of the input image bytes (never its URL or file name);
- `seed`: the resolved, concrete seed. A request with seed -1 has no key of its own (it is random, so it
  is never a hit) unless the caller asks `reuse_cached`: then it is looked up by the *seedless* key
  (`seedless_key`), whose index object points at the latest result made for those inputs with any seed.

The key is `sha256(canonical JSON of {"v", "kind", those fields})` in hex. Canonical JSON = sorted keys,
no whitespace, UTF-8, no NaN/Infinity.

Objects per result (all under `results/<key>/`): `video.<ext>`, `last_frame.png` and `manifest.json`.
The manifest is written last, so its presence means the result is complete; its content is also carried
in the manifest object's metadata, so a lookup is two parallel HEADs (manifest + video) and no GET.
`results/latest/<seedless_key>.json` is the index object for `reuse_cached`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import tenacity

from app.store.base import Store, StoreError, StoreUnavailable
from app.store.fileops import FileOps

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_VERSION = 1
VIDEO_CONTENT_TYPES = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "gif": "image/gif",
}
PREFIX = "results"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# --- keys ----------------------------------------------------------------------------------------
def _canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("cache key parameters must be finite numbers")
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    raise TypeError(f"cache key parameter of type {type(value).__name__} is not JSON data")


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        _canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _key(
    kind: str,
    workflow_name: str,
    graph_sha256: str,
    params: Mapping[str, Any],
    image_sha256: str,
    seed: int | None,
) -> str:
    if not workflow_name or not graph_sha256:
        raise ValueError("cache key needs the workflow name and its graph_sha256")
    if not _HEX64.match(image_sha256):
        raise ValueError("image_sha256 must be 64 lowercase hex characters (sha256 of the image bytes)")
    payload = {
        "v": KEY_VERSION,
        "kind": kind,
        "workflow": workflow_name,
        "graph_sha256": graph_sha256,
        "params": {k: v for k, v in params.items() if k != "seed"},
        "image_sha256": image_sha256,
        "seed": seed,
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def cache_key(
    workflow_name: str, graph_sha256: str, normalized_params: Mapping[str, Any], image_sha256: str, seed: int
) -> str:
    """The key of one concrete result. `seed` must be resolved (>= 0): -1 has no key of its own."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(
            "cache_key needs the resolved seed (>= 0); seed -1 is random and never cached "
            "by itself (use seedless_key + ResultCache.lookup_latest for reuse_cached)"
        )
    return _key("result", workflow_name, graph_sha256, normalized_params, image_sha256, seed)


def seedless_key(
    workflow_name: str, graph_sha256: str, normalized_params: Mapping[str, Any], image_sha256: str
) -> str:
    """The key of "these inputs with any seed": names the index object used by `reuse_cached`."""
    return _key("any-seed", workflow_name, graph_sha256, normalized_params, image_sha256, None)


def image_sha256(path: Path) -> str:
    """sha256 of a file's bytes, streamed (for the `image_sha256` part of a key)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _check_key(key: str) -> str:
    if not _HEX64.match(key):
        raise ValueError("cache keys are 64 lowercase hex characters (from cache_key/seedless_key)")
    return key


def video_key(key: str, ext: str = "mp4") -> str:
    return f"{PREFIX}/{_check_key(key)}/video.{ext}"


def last_frame_key(key: str) -> str:
    return f"{PREFIX}/{_check_key(key)}/last_frame.png"


def manifest_key(key: str) -> str:
    return f"{PREFIX}/{_check_key(key)}/manifest.json"


def index_key(seedless: str) -> str:
    return f"{PREFIX}/latest/{_check_key(seedless)}.json"


# --- manifest ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResultManifest:
    """Everything a hit must return besides URLs. Stored as JSON body and in the object's metadata."""

    key: str
    workflow: str
    seed: int
    frames: int
    fps: float
    width: int
    height: int
    size: int  # video bytes
    simulated: bool
    video_ext: str = "mp4"
    video_content_type: str = "video/mp4"
    has_last_frame: bool = True
    job_id: str | None = None
    seedless_key: str | None = None
    created_at: str = ""
    v: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> ResultManifest:
        data = json.loads(text)
        fields = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclass(frozen=True)
class CachedResult:
    """A stored result with URLs fresh at lookup time (presigned URLs expire: look up again later)."""

    key: str
    video_url: str
    last_frame_url: str | None
    video_key: str
    last_frame_key: str | None
    seed: int
    frames: int
    fps: float
    width: int
    height: int
    size: int
    simulated: bool
    workflow: str
    job_id: str | None
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- cache ---------------------------------------------------------------------------------------
class _Flight:
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task) -> None:
        self.task = task
        self.waiters = 0


class ResultCache:
    """Lookups, saves and coalescing of identical in-flight runs on top of any `Store`.

    Coalescing is per process (one asyncio loop): the API server is one process, which is where
    concurrent identical requests meet.
    """

    def __init__(
        self,
        store: Store,
        *,
        put_timeout_s: float = 600.0,
        retry_s: float = 60.0,
        retry_wait_s: float = 0.5,
    ) -> None:
        self.store = store
        # Each upload of a result: one try at most `put_timeout_s`; transient failures (5xx, a reset
        # connection, that timeout: `retryable`) are tried again with backoff for `retry_s`.
        self.put_timeout_s, self.retry_s, self.retry_wait_s = put_timeout_s, retry_s, retry_wait_s
        self._inflight: dict[str, _Flight] = {}
        self._files = FileOps()  # temp files of concurrent saves share thread hops
        self._scratch = _ScratchFiles()

    # --- lookup ----------------------------------------------------------------------------------
    async def lookup(self, key: str) -> CachedResult | None:
        """A complete stored result for `key`, or None. Two parallel HEADs, no body download."""
        mkey, vkey = manifest_key(key), video_key(key)
        mobj, vobj = await asyncio.gather(self.store.head(mkey), self.store.head(vkey))
        if mobj is None:
            return None
        try:
            manifest = ResultManifest.from_json(mobj.metadata["manifest"])
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("cache manifest %s unreadable (%s): treating as a miss", mkey, type(exc).__name__)
            return None
        if manifest.video_ext != "mp4":
            vkey = video_key(key, manifest.video_ext)
            vobj = await self.store.head(vkey)
        if vobj is None:
            log.warning("cache manifest %s present but its video is gone: treating as a miss", mkey)
            return None
        return await self._result(manifest)

    async def lookup_latest(self, seedless: str) -> CachedResult | None:
        """The latest result made for these inputs with any seed (`reuse_cached` with seed -1)."""
        idx = await self.store.head(index_key(seedless))
        if idx is None:
            return None
        key = idx.metadata.get("key", "")
        if not _HEX64.match(key):
            log.warning("cache index %s unreadable: treating as a miss", index_key(seedless))
            return None
        return await self.lookup(key)

    async def lookup_request(
        self,
        workflow_name: str,
        graph_sha256: str,
        normalized_params: Mapping[str, Any],
        image_sha256: str,
        seed: int,
        *,
        reuse_cached: bool = False,
    ) -> CachedResult | None:
        """The cache rule for one API request, in one place.

        A concrete seed (>= 0) is looked up by its own key. Seed -1 (random) is never a hit, unless
        `reuse_cached`: then any earlier result for the same inputs (the latest one) is returned.
        After a miss, resolve the seed, run, and `save(cache_key(...), seedless=seedless_key(...))`.
        """
        if seed >= 0:
            return await self.lookup(
                cache_key(workflow_name, graph_sha256, normalized_params, image_sha256, seed)
            )
        if reuse_cached:
            return await self.lookup_latest(
                seedless_key(workflow_name, graph_sha256, normalized_params, image_sha256)
            )
        return None

    async def _result(self, m: ResultManifest) -> CachedResult:
        vkey = video_key(m.key, m.video_ext)
        fkey = last_frame_key(m.key) if m.has_last_frame else None
        video_url = await self.store.url(vkey)
        frame_url = await self.store.url(fkey) if fkey else None
        return CachedResult(
            key=m.key,
            video_url=video_url,
            last_frame_url=frame_url,
            video_key=vkey,
            last_frame_key=fkey,
            seed=m.seed,
            frames=m.frames,
            fps=m.fps,
            width=m.width,
            height=m.height,
            size=m.size,
            simulated=m.simulated,
            workflow=m.workflow,
            job_id=m.job_id,
            created_at=m.created_at,
        )

    # --- save ------------------------------------------------------------------------------------
    async def save(
        self,
        key: str,
        *,
        video: Path,
        last_frame: Path | None,
        workflow: str,
        seed: int,
        frames: int,
        fps: float,
        width: int,
        height: int,
        simulated: bool,
        job_id: str | None = None,
        seedless: str | None = None,
        video_content_type: str | None = None,
    ) -> CachedResult:
        """Upload video + last frame (in parallel), then the manifest and the `reuse_cached` index.
        The video's content type follows its extension (video/mp4, video/webm) unless given."""
        _check_key(key)
        ext = Path(video).suffix.lstrip(".").lower() or "mp4"
        if video_content_type is None:
            video_content_type = VIDEO_CONTENT_TYPES.get(ext, "application/octet-stream")
        meta = {
            "cache-key": key,
            "workflow": workflow,
            "seed": str(seed),
            "simulated": "true" if simulated else "false",
        }
        if job_id:
            meta["job-id"] = job_id
        vkey = video_key(key, ext)
        uploads = [self._retrying(vkey, lambda: self.store.put(Path(video), vkey, video_content_type, meta))]
        if last_frame is not None:
            fkey = last_frame_key(key)
            uploads.append(
                self._retrying(fkey, lambda: self.store.put(Path(last_frame), fkey, "image/png", meta))
            )
        stored = await asyncio.gather(*uploads)
        manifest = ResultManifest(
            key=key,
            workflow=workflow,
            seed=seed,
            frames=frames,
            fps=fps,
            width=width,
            height=height,
            size=stored[0].size,
            simulated=simulated,
            video_ext=ext,
            video_content_type=video_content_type,
            has_last_frame=last_frame is not None,
            job_id=job_id,
            seedless_key=seedless,
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        body = manifest.to_json()
        small = [(manifest_key(key), body, {"manifest": body})]
        if seedless is not None:
            _check_key(seedless)
            small.append(
                (index_key(seedless), json.dumps({"key": key, "seed": seed}), {"key": key, "seed": str(seed)})
            )
        await self._put_small(small)
        return await self._result(manifest)

    async def _retrying(self, key: str, put: Callable[[], Awaitable[T]]) -> T:
        """One upload, bounded by `put_timeout_s` a try and retried while the store says trying again may
        help (`retryable`: a 5xx, a reset connection, a timeout) for `retry_s`, with exponential backoff.

        A refusal (credentials, missing bucket, bad key) is raised at once. Running out of retries raises
        `StoreUnavailable` (not retryable: the outputs were made, running the job again would redo the GPU
        work for the same outage) naming the key, the tries and what to check."""
        t0 = time.monotonic()
        tries = 0
        try:
            async for attempt in tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception(lambda e: bool(getattr(e, "retryable", False))),
                wait=tenacity.wait_exponential(multiplier=self.retry_wait_s, max=8.0),
                stop=tenacity.stop_after_delay(self.retry_s),
                reraise=True,
            ):
                with attempt:
                    tries += 1
                    try:
                        try:
                            async with asyncio.timeout(self.put_timeout_s):
                                return await put()
                        except TimeoutError:
                            raise StoreUnavailable(
                                f"upload {key} took longer than {self.put_timeout_s:g} s "
                                "(STORE_PUT_TIMEOUT_S)"
                            ) from None
                    except StoreError as exc:
                        if getattr(exc, "retryable", False):
                            log.warning("store: %s (try %d; retrying)", exc, tries)
                        raise
        except StoreError as exc:
            if not getattr(exc, "retryable", False):
                raise
            raise StoreUnavailable(
                f"could not store the result ({tries} tries in {time.monotonic() - t0:.0f} s): {exc}. "
                "The result store is failing or unreachable: check it (R2 status, disk, network), then "
                "submit the request again",
                retryable=False,
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _put_small(self, objects: list[tuple[str, str, dict[str, str]]]) -> None:
        """Store small JSON objects (the manifest, the `reuse_cached` index) side by side.

        The index may land before the manifest it points at: a lookup through it then finds no manifest,
        which is a miss, exactly as when a crash falls between the video and the manifest.

        A store that takes bytes gets them directly; else the bodies go through reusable scratch files,
        written in one (shared) thread hop: file work never runs on the loop."""
        put_bytes = getattr(self.store, "put_bytes", None)
        if put_bytes is not None:
            await asyncio.gather(
                *(
                    self._retrying(
                        key,
                        functools.partial(put_bytes, text.encode("utf-8"), key, "application/json", meta),
                    )
                    for key, text, meta in objects
                )
            )
            return
        slots = self._scratch.take(len(objects))
        bodies = [text.encode("utf-8") for _, text, _ in objects]
        paths = await self._files.run(self._scratch.write, slots, bodies)
        try:
            await asyncio.gather(
                *(
                    self._retrying(
                        key, functools.partial(self.store.put, path, key, "application/json", meta)
                    )
                    for path, (key, _, meta) in zip(paths, objects, strict=True)
                )
            )
        except BaseException:
            await asyncio.shield(self._files.run(_unlink_all, paths))  # a store thread may still read one
            raise
        self._scratch.give(paths)

    # --- coalescing ------------------------------------------------------------------------------
    def inflight(self, key: str) -> bool:
        return key in self._inflight

    async def run_once(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` once for all concurrent callers with the same key; each gets its result or error.

        The run is a task of its own: one caller being cancelled does not cancel it for the others;
        when the last waiter goes away the run is cancelled. Nothing is remembered after it ends, so a
        failure is not cached (the next call runs again) and a success is found by `lookup`.
        """
        flight, _ = self._join(key, fn)
        return await self._wait(key, flight)

    async def get_or_run(
        self, key: str, compute: Callable[[], Awaitable[CachedResult]]
    ) -> tuple[CachedResult, Literal["hit", "ran", "joined"]]:
        """Lookup, else join or start the one run for `key`. `compute` must `save` and return its result.

        The starting caller looks up once more inside the run, closing the window where another run
        finished between this caller's miss and its start.
        """
        hit = await self.lookup(key)
        if hit is not None:
            return hit, "hit"

        async def leader() -> CachedResult:
            again = await self.lookup(key)
            return again if again is not None else await compute()

        flight, started = self._join(key, leader)
        return await self._wait(key, flight), ("ran" if started else "joined")

    def _join(self, key: str, fn: Callable[[], Awaitable[Any]]) -> tuple[_Flight, bool]:
        flight = self._inflight.get(key)
        if flight is not None:
            return flight, False

        async def call() -> Any:
            return await fn()

        flight = _Flight(asyncio.get_running_loop().create_task(call(), name=f"cache-run-{key[:12]}"))
        self._inflight[key] = flight
        flight.task.add_done_callback(functools.partial(self._landed, key, flight))
        return flight, True

    async def _wait(self, key: str, flight: _Flight) -> Any:
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                if self._inflight.get(key) is flight:
                    del self._inflight[key]  # a new caller starts afresh instead of joining a dying run
                flight.task.cancel()

    def _landed(self, key: str, flight: _Flight, task: asyncio.Task) -> None:
        if self._inflight.get(key) is flight:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" when every waiter left


class _ScratchFiles:
    """Temp files for small bodies (manifests), rewritten in place and reused.

    Creating and deleting two files per result made ext4 scan recently deleted inodes on every create
    (without a journal it will not reuse them), the largest single CPU cost of a job on the benchmark
    machine. A file returns to the pool only after the put that read it returned; after an error or a
    cancel it is deleted instead, since a store's thread may still be reading it."""

    MAX_FREE = 64

    def __init__(self) -> None:
        self._free: list[Path] = []
        self._dir: Path | None = None
        self._lock = threading.Lock()

    def take(self, n: int) -> list[Path | None]:
        """On the loop: reusable files, None where a new one is needed."""
        return [self._free.pop() if self._free else None for _ in range(n)]

    def give(self, paths: list[Path]) -> None:
        room = self.MAX_FREE - len(self._free)
        self._free.extend(paths[:room])
        for extra in paths[room:]:  # rare: more concurrent saves than the pool keeps
            with contextlib.suppress(OSError):
                os.unlink(extra)

    def write(self, slots: list[Path | None], bodies: list[bytes]) -> list[Path]:
        """In a thread: the bodies in the given (or new) files."""
        paths: list[Path] = []
        try:
            for slot, data in zip(slots, bodies, strict=True):
                if slot is None:
                    fd, tmp = tempfile.mkstemp(prefix="small-", suffix=".json", dir=self._directory())
                    slot = Path(tmp)
                    paths.append(slot)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                else:
                    try:
                        slot.write_bytes(data)
                    except FileNotFoundError:  # the scratch directory was pruned: start a new one
                        self._dir = None
                        paths.extend(self.write([None], [data]))
                        continue
                    paths.append(slot)
        except BaseException:
            _unlink_all(paths)
            raise
        return paths

    def _directory(self) -> str:
        with self._lock:
            if self._dir is None or not self._dir.is_dir():
                self._dir = Path(tempfile.mkdtemp(prefix="cfcache-"))
                weakref.finalize(self, shutil.rmtree, str(self._dir), True)
            return str(self._dir)


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


__all__ = [
    "CachedResult",
    "ResultCache",
    "ResultManifest",
    "cache_key",
    "canonical_json",
    "image_sha256",
    "index_key",
    "last_frame_key",
    "manifest_key",
    "seedless_key",
    "video_key",
]
