"""LocalStore (the embedded default), its /files router, and make_store's choice of backend."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.errors import ConfigError
from app.store import InvalidKey, LocalStore, R2Store, StoreError, local_files_router, make_store
from tests.store.conftest import random_file

BASE = "http://testserver"


@pytest.fixture
def local(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store", BASE)


@pytest.fixture
async def http(local):
    app = FastAPI()
    app.include_router(local_files_router(local))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


async def test_put_head_url_delete_round_trip(local, tmp_path):
    src = random_file(tmp_path / "v.mp4", 3 * 1024 * 1024 + 17)
    obj = await local.put(src, "results/k/video.mp4", "video/mp4", {"job-id": "j", "seed": "3"})
    assert obj.size == src.stat().st_size
    assert obj.etag == hashlib.md5(src.read_bytes()).hexdigest()
    assert await local.head("results/k/video.mp4") == obj
    assert await local.url("results/k/video.mp4") == f"{BASE}/files/results/k/video.mp4"
    await local.delete("results/k/video.mp4")
    assert await local.head("results/k/video.mp4") is None
    await local.delete("results/k/video.mp4")


async def test_put_is_atomic_and_leaves_no_temp_files(local, tmp_path):
    first = random_file(tmp_path / "a", 1000)
    second = random_file(tmp_path / "b", 2000)
    await local.put(first, "x.bin", "application/octet-stream", {})
    await local.put(second, "x.bin", "application/octet-stream", {"v": "2"})
    assert local.path_for("x.bin").read_bytes() == second.read_bytes()
    assert (await local.head("x.bin")).metadata == {"v": "2"}
    assert list(local.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "a//b", "./a", "a\\b", "a\x00b", ""])
async def test_keys_that_could_escape_the_root_are_refused(local, tmp_path, key):
    src = random_file(tmp_path / "s", 10)
    with pytest.raises(InvalidKey):
        await local.put(src, key, "text/plain", {})


async def test_metadata_that_cannot_travel_as_headers_is_refused(local, tmp_path):
    src = random_file(tmp_path / "s", 10)
    with pytest.raises(StoreError, match="ASCII"):
        await local.put(src, "k", "text/plain", {"prompt": "caf\u00e9"})
    with pytest.raises(StoreError, match="lowercase"):
        await local.put(src, "k", "text/plain", {"Job_ID": "x"})


async def test_router_serves_content_type_and_full_body(local, http, tmp_path):
    src = random_file(tmp_path / "v.mp4", 100_000)
    await local.put(src, "r/v.mp4", "video/mp4", {})
    resp = await http.get("/files/r/v.mp4")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "video/mp4"
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.content == src.read_bytes()
    head = await http.head("/files/r/v.mp4")
    assert head.status_code == 200 and head.headers["content-length"] == "100000"


async def test_router_serves_byte_ranges(local, http, tmp_path):
    src = random_file(tmp_path / "v.mp4", 100_000)
    data = src.read_bytes()
    await local.put(src, "r/v.mp4", "video/mp4", {})
    resp = await http.get("/files/r/v.mp4", headers={"Range": "bytes=1000-1999"})
    assert resp.status_code == 206
    assert resp.headers["content-range"] == "bytes 1000-1999/100000"
    assert resp.content == data[1000:2000]
    tail = await http.get("/files/r/v.mp4", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    bad = await http.get("/files/r/v.mp4", headers={"Range": "bytes=200000-"})
    assert bad.status_code == 416


async def test_router_refuses_path_traversal(local, http, tmp_path):
    secret = tmp_path / "store" / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("top secret")
    (local.meta_dir).mkdir(parents=True, exist_ok=True)
    for url in (
        "/files/%2e%2e/secret.txt",
        "/files/..%2fsecret.txt",
        "/files/a/%2e%2e/%2e%2e/secret.txt",
        "/files/%2e%2e/meta",
        "/files//etc/passwd",
    ):
        resp = await http.get(url)
        assert resp.status_code == 404, url
        assert "top secret" not in resp.text


async def test_router_refuses_symlink_out_of_the_root(local, http, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("outside data")
    local.objects_dir.mkdir(parents=True)
    os.symlink(outside, local.objects_dir / "link.txt")
    resp = await http.get("/files/link.txt")
    assert resp.status_code == 404 and "outside data" not in resp.text


async def test_router_404_for_missing_object(http):
    assert (await http.get("/files/results/nope/video.mp4")).status_code == 404


async def test_local_store_url_opens_through_a_real_server_route(local, http, tmp_path):
    src = random_file(tmp_path / "f.png", 321)
    await local.put(src, "results/k/last frame.png", "image/png", {})
    url = await local.url("results/k/last frame.png")
    assert url == f"{BASE}/files/results/k/last%20frame.png"
    resp = await http.get(url)
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"


def test_make_store_defaults_to_local_under_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path / "d", public_url="https://api.example.com/")
    store = make_store(settings)
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "d" / "results").resolve()
    assert store.public_base_url == "https://api.example.com"


def test_make_store_picks_r2_when_a_bucket_is_configured():
    settings = Settings(
        r2_bucket="videos",
        r2_account_id="acct123",
        r2_access_key_id="AKID-test-12345",
        r2_secret_access_key="sk-test-1234567890",
        r2_presign_expiry_s=600,
    )
    store = make_store(settings)
    assert isinstance(store, R2Store)
    assert store.endpoint_url == "https://acct123.r2.cloudflarestorage.com"
    assert store.presign_expiry_s == 600 and store.bucket == "videos"
    assert "sk-test-1234567890" not in repr(store)


def test_r2_without_credentials_is_a_config_error():
    with pytest.raises(ConfigError, match="R2_ACCESS_KEY_ID"):
        make_store(Settings(r2_bucket="videos", r2_account_id="acct123"))
    with pytest.raises(ConfigError, match="R2_ACCOUNT_ID"):
        make_store(Settings(r2_bucket="videos", r2_access_key_id="a" * 10, r2_secret_access_key="b" * 10))
