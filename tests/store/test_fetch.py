"""Reading a stored object back to a file (a story's segments before the join): local store, R2 on a
real S3 server, and any other store through its URL."""

from __future__ import annotations

import hashlib

import pytest
from aiohttp import web

from app.store import LocalStore, R2Store, StoreError
from app.store.base import ObjectMissing
from app.store.fetch import fetch_object
from tests.e2e.conftest import http_server
from tests.store.conftest import PART, random_file


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_local_store_object_is_copied_back_whole(tmp_path):
    store = LocalStore(tmp_path / "store", "http://testserver")
    src = random_file(tmp_path / "src.bin", 3 * 1024 * 1024 + 7)
    await store.put(src, "results/a/video.mp4", "video/mp4", {})
    size = await fetch_object(store, "results/a/video.mp4", tmp_path / "out" / "v.mp4")
    assert size == src.stat().st_size and _sha(tmp_path / "out" / "v.mp4") == _sha(src)
    assert not (tmp_path / "out" / "v.mp4.part").exists()


async def test_missing_local_object_is_a_typed_error(tmp_path):
    store = LocalStore(tmp_path / "store", "http://testserver")
    with pytest.raises(ObjectMissing):
        await fetch_object(store, "results/none/video.mp4", tmp_path / "v.mp4")
    assert not (tmp_path / "v.mp4").exists()


@pytest.mark.seaweedfs
async def test_r2_object_larger_than_a_part_is_downloaded_whole(r2: R2Store, tmp_path):
    src = random_file(tmp_path / "big.bin", 2 * PART + 123)
    await r2.put(src, "results/b/video.mp4", "video/mp4", {})
    size = await fetch_object(r2, "results/b/video.mp4", tmp_path / "back.mp4")
    assert size == src.stat().st_size and _sha(tmp_path / "back.mp4") == _sha(src)


@pytest.mark.seaweedfs
async def test_missing_r2_object_is_a_typed_error_and_leaves_no_part_file(r2: R2Store, tmp_path):
    with pytest.raises(ObjectMissing):
        await fetch_object(r2, "results/none/video.mp4", tmp_path / "x.mp4")
    assert list(tmp_path.iterdir()) == []


class _UrlOnlyStore:
    def __init__(self, base: str) -> None:
        self.base = base

    async def url(self, key: str) -> str:
        return f"{self.base}/{key}"


async def test_a_store_without_a_reader_is_read_through_its_url(tmp_path):
    body = b"x" * 300_000

    async def serve(request: web.Request) -> web.Response:
        if request.path.endswith("gone.mp4"):
            return web.Response(status=404)
        return web.Response(body=body)

    async with http_server({"/{tail:.*}": serve}) as base:
        store = _UrlOnlyStore(base)
        assert await fetch_object(store, "results/c/video.mp4", tmp_path / "c.mp4") == len(body)
        assert (tmp_path / "c.mp4").read_bytes() == body
        with pytest.raises(StoreError, match="HTTP 404"):
            await fetch_object(store, "results/c/gone.mp4", tmp_path / "gone.mp4")
        assert not (tmp_path / "gone.mp4").exists() and not (tmp_path / "gone.mp4.part").exists()
