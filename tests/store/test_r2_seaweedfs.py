"""R2Store against a real S3 server (SeaweedFS on loopback): uploads, URLs and failure modes."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import time
import traceback

import botocore.auth
import httpx
import pytest

from app.store import BucketMissing, R2Store, StoreAuthError, StoreUnavailable
from tests.store.conftest import PART, random_file
from tests.support.seaweedfs import PUBLIC_BUCKET

pytestmark = pytest.mark.seaweedfs


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_multipart_upload_of_file_larger_than_part_size(r2: R2Store, tmp_path):
    src = random_file(tmp_path / "big.mp4", 2 * PART + 123_457)  # -> 3 parts
    obj = await r2.put(src, "results/k/video.mp4", "video/mp4", {"job-id": "j1"})
    assert obj.size == src.stat().st_size
    assert obj.etag.endswith("-3"), obj.etag  # S3 multipart ETag: md5-of-part-md5s-N
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.get(await r2.url("results/k/video.mp4"))
    assert resp.status_code == 200
    assert _sha(resp.content) == _sha(src.read_bytes())


async def test_small_upload_is_single_part_with_md5_etag(r2: R2Store, tmp_path):
    src = tmp_path / "frame.png"
    src.write_bytes(b"\x89PNG fake" * 100)
    obj = await r2.put(src, "f.png", "image/png", {})
    assert obj.etag == hashlib.md5(src.read_bytes()).hexdigest()


async def test_content_types_and_metadata_round_trip(r2: R2Store, tmp_path):
    video = random_file(tmp_path / "v.mp4", 1000)
    frame = random_file(tmp_path / "f.png", 500)
    meta = {"job-id": "job-42", "workflow": "wan22_i2v", "seed": "1234", "simulated": "true"}
    await r2.put(video, "r/v.mp4", "video/mp4", meta)
    await r2.put(frame, "r/f.png", "image/png", meta)
    v, f = await r2.head("r/v.mp4"), await r2.head("r/f.png")
    assert (v.content_type, v.size, v.metadata) == ("video/mp4", 1000, meta)
    assert (f.content_type, f.size, f.metadata) == ("image/png", 500, meta)


async def test_head_of_missing_key_is_none(r2: R2Store):
    assert await r2.head("nope/missing.mp4") is None


async def test_delete_removes_and_is_idempotent(r2: R2Store, tmp_path):
    await r2.put(random_file(tmp_path / "x", 10), "x", "application/octet-stream", {})
    await r2.delete("x")
    assert await r2.head("x") is None
    await r2.delete("x")


async def test_presigned_url_serves_full_body_and_range(r2: R2Store, tmp_path):
    src = random_file(tmp_path / "v.mp4", 300_000)
    data = src.read_bytes()
    await r2.put(src, "p/v.mp4", "video/mp4", {})
    url = await r2.url("p/v.mp4")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
    async with httpx.AsyncClient(timeout=30) as http:
        full = await http.get(url)
        part = await http.get(url, headers={"Range": "bytes=100-1099"})
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
    assert _sha(full.content) == _sha(data)
    assert part.status_code == 206
    assert part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"


async def test_expired_presigned_url_is_refused(make_r2, tmp_path, monkeypatch):
    store = make_r2(presign_expiry_s=60)
    await store.put(random_file(tmp_path / "v", 100), "e/v.mp4", "video/mp4", {})
    fresh = await store.url("e/v.mp4")
    an_hour_ago = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(hours=1)
    with monkeypatch.context() as mp:
        mp.setattr(botocore.auth, "get_current_datetime", lambda *_, **__: an_hour_ago)
        stale = await store.url("e/v.mp4")  # signed an hour ago, valid for 60 s
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(fresh)).status_code == 200
        expired = await http.get(stale)
    assert expired.status_code == 403
    assert "expired" in expired.text.lower()


async def test_tampered_presigned_url_is_refused(r2: R2Store, tmp_path):
    await r2.put(random_file(tmp_path / "v", 100), "t/v.mp4", "video/mp4", {})
    url = await r2.url("t/v.mp4")
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.get(url.replace("t/v.mp4", "t/other.mp4"))
    assert resp.status_code == 403


async def test_public_base_url_mode_hands_out_plain_urls_that_work(make_r2, seaweedfs, tmp_path):
    base = f"{seaweedfs.endpoint}/{PUBLIC_BUCKET}"  # anonymous-read bucket, like r2.dev
    store = make_r2(bucket=PUBLIC_BUCKET, public_base_url=base + "/")
    src = random_file(tmp_path / "v.mp4", 5000)
    key = "results/pub test/video.mp4"
    await store.put(src, key, "video/mp4", {})
    url = await store.url(key)
    assert url == f"{base}/results/pub%20test/video.mp4"
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.get(url, headers={"Range": "bytes=0-9"})
    assert resp.status_code == 206 and resp.content == src.read_bytes()[:10]


async def test_wrong_secret_key_is_a_clear_auth_error_without_the_secret(make_r2, seaweedfs, tmp_path):
    bad_secret = "WRONG-secret-value-0123456789abcdef"
    store = make_r2(bucket=seaweedfs.new_bucket(), secret_access_key=bad_secret)
    src = random_file(tmp_path / "v", 100)
    with pytest.raises(StoreAuthError) as info:
        await store.put(src, "a/v.mp4", "video/mp4", {})
    _assert_clean(info.value, [bad_secret, seaweedfs.secret_key])
    assert "R2_SECRET_ACCESS_KEY" in str(info.value)
    assert "SignatureDoesNotMatch" in str(info.value)
    with pytest.raises(StoreAuthError):
        await store.head("a/v.mp4")  # HEAD answers a bare 403: still an auth error, not "missing"


async def test_unknown_access_key_is_a_clear_auth_error_without_the_key(make_r2, seaweedfs, tmp_path):
    bad_key = "AKIAUNKNOWN0000000000"
    store = make_r2(access_key_id=bad_key)
    with pytest.raises(StoreAuthError) as info:
        await store.put(random_file(tmp_path / "v", 100), "a/v.mp4", "video/mp4", {})
    _assert_clean(info.value, [bad_key, seaweedfs.secret_key])
    assert "InvalidAccessKeyId" in str(info.value)
    with pytest.raises(StoreAuthError):
        await store.check()
    assert bad_key not in repr(store)


async def test_missing_bucket_is_a_clear_error(make_r2, seaweedfs, tmp_path):
    store = make_r2(bucket="no-such-bucket-here")
    with pytest.raises(BucketMissing) as info:
        await store.put(random_file(tmp_path / "v", 100), "a/v.mp4", "video/mp4", {})
    assert "no-such-bucket-here" in str(info.value) and "R2_BUCKET" in str(info.value)
    assert not info.value.retryable
    with pytest.raises(BucketMissing):
        await store.check()
    # the S3 server must not have created it on the fly
    names = [b["Name"] for b in seaweedfs.client().list_buckets()["Buckets"]]
    assert "no-such-bucket-here" not in names


async def test_unreachable_endpoint_is_retryable_unavailable(make_r2, tmp_path):
    store = make_r2(bucket="b", endpoint_url="http://127.0.0.1:9", connect_timeout_s=1, max_attempts=1)
    with pytest.raises(StoreUnavailable) as info:
        await store.head("a/v.mp4")
    assert info.value.retryable


async def test_upload_runs_off_the_event_loop(r2: R2Store, tmp_path):
    src = random_file(tmp_path / "v.mp4", 6 * PART)
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await r2.put(src, "loop/v.mp4", "video/mp4", {})
    done.set()
    await tick
    assert len(gaps) > 5
    assert max(gaps) < 0.25, f"event loop stalled {max(gaps):.3f}s during upload"


async def test_missing_source_file_is_refused(r2: R2Store, tmp_path):
    from app.store import ObjectMissing

    with pytest.raises(ObjectMissing):
        await r2.put(tmp_path / "nope.mp4", "x.mp4", "video/mp4", {})


def _assert_clean(err: Exception, secrets: list[str]) -> None:
    text = "".join(traceback.format_exception(err)) + repr(err) + str(err)
    for s in secrets:
        assert s not in text
