"""The model mirror in R2: every workflow's model files, copied once from their source into the bucket.

Why: a fresh rental waits for ~26 GB of models before its first clip. R2 charges no egress and does
not rate-limit like the Hub, so `comfyfleet models mirror` copies each file from where provisioning
would fetch it (the Hub, or `MODEL_MIRROR_URL`) into `<MODEL_R2_PREFIX><folder>/<name>`, and
`apply_r2_mirror` then gives instances a presigned URL for each mirrored file, with the usual source as
that file's fallback (`provision.sh` switches per file when the mirror fails: object gone, URL
expired, bytes that fail verification).

The copy streams: the source is read in chunks (resumed with Range after a drop) and uploaded as
multipart parts as they fill, so memory holds a few parts, never a model. The sha256 is computed on the
way; the object's metadata `sha256` records it, and an upload whose bytes do not match the expected
hash is aborted before completion, so nothing unverified is ever under the key. A file is skipped when
its object already carries the expected sha256. Presigned URLs are credentials for their lifetime:
they are never logged (see `app.redact`), and the script keeps them out of argv and off the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from app.config import Settings
from app.errors import ComfyfleetError
from app.provision.plan import DEFAULT_TOKEN_HOSTS, Plan, PlannedModel
from app.store.base import StoreError
from app.store.r2 import MAX_PRESIGN_S, R2Store

log = logging.getLogger(__name__)
EventCallback = Callable[[dict[str, Any]], None]


class MirrorError(ComfyfleetError):
    """A model could not be copied into the mirror. `file` names it."""

    def __init__(self, file: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)
        self.file = file


@dataclass(frozen=True)
class MirrorOutcome:
    folder: str
    name: str
    key: str
    status: str  # "copied", "present" or "failed"
    size: int = 0
    sha256: str | None = None
    seconds: float = 0.0
    message: str = ""


def r2_configured(settings: Settings) -> bool:
    """R2 credentials and a bucket are set (whatever STORE_BACKEND says about results)."""
    return bool(
        settings.r2_bucket
        and (settings.r2_account_id or settings.r2_endpoint_url)
        and settings.r2_access_key_id
        and settings.r2_secret_access_key
    )


def mirror_key(prefix: str, folder: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{folder}/{name}" if prefix else f"{folder}/{name}"


def _without_query(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0]


def presign_lifetime_s(settings: Settings) -> int:
    """Long enough for a whole provisioning run (then the Hub fallback takes over), within SigV4's limit."""
    return int(min(MAX_PRESIGN_S, max(900.0, settings.provision_timeout_s + 600)))


async def apply_r2_mirror(plan: Plan, settings: Settings, *, store: R2Store | None = None) -> Plan:
    """`plan` with each model that the R2 mirror holds (same sha256) fetched from it first.

    The model's planned URL becomes its fallback. A model the mirror lacks, or holds with another hash,
    keeps its URL. The mirror is an optimisation: any trouble reaching R2 is logged and ignored.
    """
    if not settings.model_r2_mirror or not r2_configured(settings) or not plan.models:
        return plan
    own = store is None
    try:
        store = store or R2Store.from_settings(settings)
    except ComfyfleetError as exc:
        log.warning("model mirror: R2 is not usable (%s); models come from their usual source", exc)
        return plan
    lifetime = presign_lifetime_s(settings)
    try:

        async def one(m: PlannedModel) -> PlannedModel:
            key = mirror_key(settings.model_r2_prefix, m.folder, m.name)
            try:
                obj = await store.head(key)
            except StoreError as exc:
                log.warning("model mirror: cannot look up %s (%s); using its usual source", key, exc)
                return m
            sha = (obj.metadata.get("sha256") or "").lower() if obj else ""
            if obj is None or not sha:
                return m
            if (m.sha256 and sha != m.sha256) or (m.size_exact and m.size and obj.size != m.size):
                log.info("model mirror: %s holds another version of %s; using its usual source", key, m.name)
                return m
            return dataclasses.replace(
                m,
                url=store.presign(key, lifetime),
                fallback_url=m.url,
                size=obj.size,
                size_exact=True,
                sha256=sha,
            )

        models = list(await asyncio.gather(*(one(m) for m in plan.models)))
    finally:
        if own:
            await store.close()
    mirrored = sum(1 for m in models if m.fallback_url)
    log.info(
        "model mirror: %d of %d model files come from R2 (presigned, %d s)", mirrored, len(models), lifetime
    )
    return dataclasses.replace(plan, models=models)


# --- copying into the mirror -------------------------------------------------------------------------
async def _open(
    client: httpx.AsyncClient, m: PlannedModel, offset: int, token: str | None, token_hosts: Iterable[str]
) -> httpx.Response:
    """GET `url` from byte `offset`, following redirects by hand: the token goes to token hosts only."""
    hosts = {h.lower() for h in token_hosts}
    url = m.url
    for _ in range(10):
        headers = {"User-Agent": "comfyfleet-mirror/1"}
        if token and (urlsplit(url).hostname or "").lower() in hosts:
            headers["Authorization"] = f"Bearer {token}"
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = await client.send(client.build_request("GET", url, headers=headers), stream=True)
        if response.is_redirect and "Location" in response.headers:
            await response.aclose()
            url = urljoin(url, response.headers["Location"])
            continue
        return response
    raise MirrorError(m.name, f"{m.name}: more than 10 redirects from {_without_query(m.url)}")


async def source_chunks(
    client: httpx.AsyncClient,
    m: PlannedModel,
    *,
    token: str | None,
    token_hosts: Iterable[str],
    retries: int = 6,
    backoff_s: float = 1.0,
) -> AsyncIterator[bytes]:
    """The bytes of `m.url`, resumed with Range after a dropped connection or a 5xx (`retries`
    consecutive attempts without progress, exponential backoff)."""
    offset, fails, delay = 0, 0, backoff_s
    while True:
        reason = ""
        try:
            response = await _open(client, m, offset, token, token_hosts)
            try:
                code = response.status_code
                if code in (401, 403):
                    hint = (
                        "set HF_TOKEN (with access to this repo)" if not token else "the HF token was refused"
                    )
                    raise MirrorError(m.name, f"{m.name}: its source answered HTTP {code}: {hint}")
                if code in (404, 410):
                    raise MirrorError(m.name, f"{m.name}: not found at its source (HTTP {code})")
                if code >= 500 or code == 429:
                    reason = f"HTTP {code}"
                elif code >= 400:
                    raise MirrorError(m.name, f"{m.name}: its source answered HTTP {code}")
                elif offset and code != 206:
                    raise MirrorError(
                        m.name,
                        f"{m.name}: the source ignored Range when resuming at byte {offset}",
                        retryable=True,
                    )
                else:
                    async for chunk in response.aiter_bytes():  # as they arrive: a drop loses none
                        offset += len(chunk)
                        fails, delay = 0, backoff_s
                        yield chunk
                    if m.size_exact and m.size and offset < m.size:
                        reason = f"the transfer ended at byte {offset} of {m.size}"
                    else:
                        return
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__} at byte {offset}"
        fails += 1
        if fails >= retries:
            raise MirrorError(
                m.name, f"{m.name}: download failed after {fails} attempts: {reason}", retryable=True
            )
        log.info("model mirror: %s: %s; resuming from byte %d", m.name, reason, offset)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def mirror_model(
    m: PlannedModel,
    settings: Settings,
    store: R2Store,
    client: httpx.AsyncClient,
    *,
    token_hosts: Iterable[str] = DEFAULT_TOKEN_HOSTS,
    on_event: EventCallback | None = None,
) -> MirrorOutcome:
    """Copy one model into the mirror unless its object already carries the expected sha256."""
    key = mirror_key(settings.model_r2_prefix, m.folder, m.name)
    emit = on_event or (lambda event: None)
    existing = await store.head(key)
    have_sha = (existing.metadata.get("sha256") or "").lower() if existing else ""
    size_ok = existing is not None and (not m.size_exact or not m.size or existing.size == m.size)
    if existing and have_sha and size_ok and (m.sha256 is None or have_sha == m.sha256):
        emit({"event": "present", "file": m.name, "folder": m.folder, "key": key, "bytes": existing.size})
        return MirrorOutcome(m.folder, m.name, key, "present", existing.size, have_sha)

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    digest = hashlib.sha256()
    counted = 0
    started = time.monotonic()
    last = started
    emit({"event": "start", "file": m.name, "folder": m.folder, "key": key, "total": m.size})

    async def hashed() -> AsyncIterator[bytes]:
        nonlocal counted, last
        source = source_chunks(client, m, token=token, token_hosts=token_hosts)
        async with contextlib.aclosing(source):  # an aborted upload closes the source connection now
            async for chunk in source:
                digest.update(chunk)
                counted += len(chunk)
                now = time.monotonic()
                if now - last >= 1.0:
                    last = now
                    emit({"event": "progress", "file": m.name, "bytes": counted, "total": m.size})
                yield chunk

    def check() -> None:
        if m.size_exact and m.size and counted != m.size:
            raise MirrorError(
                m.name, f"{m.name}: the source sent {counted} bytes, expected {m.size}", retryable=True
            )
        got = digest.hexdigest()
        if m.sha256 and got != m.sha256:
            raise MirrorError(
                m.name,
                f"{m.name}: sha256 mismatch (got {got}, expected {m.sha256}); nothing was stored",
                retryable=True,
            )

    meta = {"source": _without_query(m.source_url)[:1500]}
    content_type = "application/octet-stream"
    async with contextlib.aclosing(hashed()) as chunks:
        if m.sha256:
            await store.put_stream(
                chunks, key, content_type, {**meta, "sha256": m.sha256}, before_complete=check
            )
        else:
            # The hash is only known at the end, but metadata is fixed when an upload starts: upload under
            # a temporary key, then copy into place with the hash (server-side); drop the temporary object.
            tmp = f"{key}.incoming-{uuid.uuid4().hex[:12]}"
            try:
                await store.put_stream(chunks, tmp, content_type, meta, before_complete=check)
                await store.copy(tmp, key, content_type, {**meta, "sha256": digest.hexdigest()})
            finally:
                await store.delete(tmp)
    seconds = time.monotonic() - started
    sha = digest.hexdigest()
    emit({"event": "done", "file": m.name, "folder": m.folder, "key": key, "bytes": counted, "sha256": sha,
          "ms": int(seconds * 1000)})  # fmt: skip
    return MirrorOutcome(m.folder, m.name, key, "copied", counted, sha, seconds)


async def mirror_models(
    models: Iterable[PlannedModel],
    settings: Settings,
    store: R2Store,
    *,
    token_hosts: Iterable[str] = DEFAULT_TOKEN_HOSTS,
    concurrency: int = 2,
    on_event: EventCallback | None = None,
    http_timeout_s: float = 60.0,
) -> list[MirrorOutcome]:
    """Mirror every distinct (folder, name) in `models`, `concurrency` at a time. A failed file is
    reported in its outcome (and an `error` event); the others still complete."""
    unique: dict[tuple[str, str], PlannedModel] = {}
    for m in models:
        unique.setdefault((m.folder, m.name), m)
    slots = asyncio.Semaphore(max(1, concurrency))
    timeout = httpx.Timeout(http_timeout_s, connect=20.0)
    hosts = tuple(token_hosts)

    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:

        async def one(m: PlannedModel) -> MirrorOutcome:
            key = mirror_key(settings.model_r2_prefix, m.folder, m.name)
            async with slots:
                try:
                    return await mirror_model(
                        m, settings, store, client, token_hosts=hosts, on_event=on_event
                    )
                except (MirrorError, StoreError) as exc:
                    if on_event:
                        on_event({"event": "error", "file": m.name, "folder": m.folder, "message": str(exc)})
                    return MirrorOutcome(m.folder, m.name, key, "failed", message=str(exc))

        return list(await asyncio.gather(*(one(m) for m in unique.values())))
