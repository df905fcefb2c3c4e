"""Opt-in: the same checks against real Cloudflare R2 (R2-only behaviour: checksums, `auto` region).

Runs only when R2_ACCOUNT_ID (or R2_ENDPOINT_URL), R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY and R2_BUCKET
are set. The root conftest removes R2_* from the environment for every test, so the values are read
here, at import (collection) time, before that fixture runs. Objects go under a unique prefix and are
deleted afterwards. `python -m pytest -m live_r2 tests/store/test_live_r2.py`
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import traceback
import uuid

import httpx
import pytest

from app.store import BucketMissing, R2Store, ResultCache, StoreAuthError, cache_key
from app.store.r2 import MB, r2_endpoint
from tests.store.conftest import random_file

ACCOUNT = os.environ.get("R2_ACCOUNT_ID", "")
ENDPOINT = os.environ.get("R2_ENDPOINT_URL", "") or (r2_endpoint(ACCOUNT) if ACCOUNT else "")
ACCESS_KEY = os.environ.get("R2_ACCESS_KEY_ID", "")
SECRET_KEY = os.environ.get("R2_SECRET_ACCESS_KEY", "")
BUCKET = os.environ.get("R2_BUCKET", "")
PUBLIC_BASE = os.environ.get("R2_PUBLIC_BASE_URL", "")

pytestmark = [
    pytest.mark.live_r2,
    pytest.mark.skipif(
        not (ENDPOINT and ACCESS_KEY and SECRET_KEY and BUCKET),
        reason="live R2 test: needs R2_ACCOUNT_ID, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, "
        "R2_BUCKET in the environment",
    ),
]


def _store(**kw) -> R2Store:
    args = dict(
        bucket=BUCKET,
        endpoint_url=ENDPOINT,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        multipart_threshold=5 * MB,
        part_size=5 * MB,
    )
    args.update(kw)
    return R2Store(**args)


@pytest.fixture
async def live():
    store = _store()
    prefix = f"comfyfleet-test/{uuid.uuid4().hex}"
    written: list[str] = []
    yield store, prefix, written
    for key in written:
        await store.delete(key)
    await store.close()


async def test_live_multipart_upload_metadata_and_presigned_range(live, tmp_path):
    store, prefix, written = live
    src = random_file(tmp_path / "v.mp4", 11 * MB)
    key = f"{prefix}/video.mp4"
    written.append(key)
    meta = {"job-id": "live", "seed": "1", "simulated": "false"}
    obj = await store.put(src, key, "video/mp4", meta)
    assert obj.etag.endswith("-3") and obj.size == src.stat().st_size
    head = await store.head(key)
    assert head.content_type == "video/mp4" and head.metadata == meta
    async with httpx.AsyncClient(timeout=60) as http:
        full = await http.get(await store.url(key))
        part = await http.get(await store.url(key), headers={"Range": "bytes=0-99"})
    assert hashlib.sha256(full.content).digest() == hashlib.sha256(src.read_bytes()).digest()
    assert part.status_code == 206 and part.content == src.read_bytes()[:100]


async def test_live_expired_presigned_url_is_refused(live, tmp_path):
    store, prefix, written = live
    key = f"{prefix}/e.png"
    written.append(key)
    await store.put(random_file(tmp_path / "e.png", 100), key, "image/png", {})
    url = store.presign(key, 1)
    await asyncio.sleep(2.5)
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(url)).status_code in (400, 403)


@pytest.mark.skipif(not PUBLIC_BASE, reason="R2_PUBLIC_BASE_URL not set")
async def test_live_public_base_url(live, tmp_path):
    _, prefix, written = live
    store = _store(public_base_url=PUBLIC_BASE)
    key = f"{prefix}/pub.png"
    written.append(key)
    await store.put(random_file(tmp_path / "p.png", 100), key, "image/png", {})
    async with httpx.AsyncClient(timeout=30, follow_redirects=True) as http:
        assert (await http.get(await store.url(key))).status_code == 200
    await store.close()


async def test_live_cache_miss_then_hit(live, tmp_path):
    store, _, written = live
    cache = ResultCache(store)
    key = cache_key("live", "0" * 64, {"run": uuid.uuid4().hex}, hashlib.sha256(b"img").hexdigest(), 1)
    assert await cache.lookup(key) is None
    saved = await cache.save(
        key,
        video=random_file(tmp_path / "v.mp4", 1000),
        last_frame=random_file(tmp_path / "f.png", 100),
        workflow="live",
        seed=1,
        frames=1,
        fps=16,
        width=16,
        height=16,
        simulated=False,
    )
    written.extend([saved.video_key, saved.last_frame_key, f"results/{key}/manifest.json"])
    hit = await cache.lookup(key)
    assert hit is not None and hit.size == 1000


async def test_live_wrong_secret_is_a_clear_auth_error(tmp_path):
    bad = "0" * 64
    store = _store(secret_access_key=bad, max_attempts=1)
    with pytest.raises(StoreAuthError) as info:
        await store.put(random_file(tmp_path / "x", 10), "comfyfleet-test/x", "text/plain", {})
    text = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert bad not in text and SECRET_KEY not in text
    await store.close()


async def test_live_missing_bucket_is_a_clear_error(tmp_path):
    store = _store(bucket=f"comfyfleet-missing-{uuid.uuid4().hex[:12]}", max_attempts=1)
    with pytest.raises((BucketMissing, StoreAuthError)):  # a bucket-scoped token gets 403, not 404
        await store.put(random_file(tmp_path / "x", 10), "x", "text/plain", {})
    await store.close()
