"""R2Store.put_stream (multipart from a stream of unknown length) and copy, against SeaweedFS."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import pytest

from app.store import R2Store, StoreError
from tests.store.conftest import PART

pytestmark = pytest.mark.seaweedfs


async def chunks(total: int, size: int = 256 * 1024, seed: bytes = b"x"):
    """`total` pseudo-random bytes in `size` chunks, generated on the fly (never held whole)."""
    block = hashlib.sha256(seed).digest() * (size // 32)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


def expected_sha(total: int, size: int = 256 * 1024, seed: bytes = b"x") -> str:
    block = hashlib.sha256(seed).digest() * (size // 32)
    h = hashlib.sha256()
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        h.update(block[:n])
        sent += n
    return h.hexdigest()


def uploads_in_progress(r2: R2Store) -> list:
    return r2._client.list_multipart_uploads(Bucket=r2.bucket).get("Uploads", [])


async def test_put_stream_uploads_equal_parts_without_holding_the_stream(make_r2):
    r2 = make_r2(upload_concurrency=2)
    total = 23 * PART + 12_345  # 24 parts; the last one short
    tracemalloc.start()
    obj = await r2.put_stream(
        chunks(total), "models/s/big.bin", "application/octet-stream", {"sha256": "a" * 64}
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert obj.size == total and obj.etag.endswith("-24") and obj.metadata["sha256"] == "a" * 64
    body = r2._client.get_object(Bucket=r2.bucket, Key="models/s/big.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == expected_sha(total)
    # A few parts in memory (those in flight, the one filling, botocore's copies of each part in flight:
    # how many of those overlap depends on thread timing, about 6 parts on a loaded machine), never the
    # 115 MiB stream: the bound is structural (independent of the stream's length), with room for timing.
    assert peak < 10 * PART < total / 2


async def test_put_stream_smaller_than_a_part_is_a_single_put(r2: R2Store):
    obj = await r2.put_stream(chunks(1000), "models/s/small.bin", "application/octet-stream", {})
    assert obj.size == 1000 and "-" not in obj.etag


async def test_put_stream_failing_its_check_aborts_and_leaves_nothing(r2: R2Store):
    def refuse() -> None:
        raise StoreError("sha256 mismatch")

    for total in (2 * PART + 1, 100):  # multipart and single PUT
        key = f"models/s/refused-{total}.bin"
        with pytest.raises(StoreError, match="sha256 mismatch"):
            await r2.put_stream(chunks(total), key, "application/octet-stream", {}, before_complete=refuse)
        assert await r2.head(key) is None
    assert not [u for u in uploads_in_progress(r2) if u["Key"].startswith("models/s/refused")]


async def test_put_stream_whose_source_breaks_aborts_the_upload(r2: R2Store):
    async def broken():
        yield os.urandom(PART + 1)
        raise ConnectionError("source dropped")

    with pytest.raises(ConnectionError):
        await r2.put_stream(broken(), "models/s/broken.bin", "application/octet-stream", {})
    assert await r2.head("models/s/broken.bin") is None
    assert not [u for u in uploads_in_progress(r2) if u["Key"] == "models/s/broken.bin"]


async def test_copy_puts_the_object_under_a_new_key_with_new_metadata(r2: R2Store):
    await r2.put_stream(chunks(3000), "models/s/tmp.bin", "application/octet-stream", {"source": "x"})
    obj = await r2.copy(
        "models/s/tmp.bin", "models/s/final.bin", "application/octet-stream", {"sha256": "b" * 64}
    )
    assert obj.size == 3000 and obj.metadata == {"sha256": "b" * 64}
