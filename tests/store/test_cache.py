"""The content-addressed result cache: keys, hits and misses on real stores, coalescing of runs."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from app.store import (
    LocalStore,
    ResultCache,
    cache_key,
    index_key,
    last_frame_key,
    manifest_key,
    seedless_key,
    video_key,
)
from tests.store.conftest import random_file

IMG = hashlib.sha256(b"input image bytes").hexdigest()
GRAPH = "g" * 64
PARAMS = {"prompt": "a cat", "num_frames": 81, "width": 832, "height": 480, "steps": 4, "cfg_scale": 1.0}


@pytest.fixture(params=["seaweedfs", "local"])
def store(request, tmp_path):
    if request.param == "seaweedfs":
        return request.getfixturevalue("r2")
    return LocalStore(tmp_path / "results", "http://files.invalid")


async def _save(cache: ResultCache, key: str, tmp_path, *, seed: int = 7, seedless: str | None = None):
    video = random_file(tmp_path / f"{key[:8]}-{seed}.mp4", 4096)
    frame = random_file(tmp_path / f"{key[:8]}-{seed}.png", 256)
    return await cache.save(
        key,
        video=video,
        last_frame=frame,
        workflow="wan",
        seed=seed,
        frames=81,
        fps=16.0,
        width=832,
        height=480,
        simulated=True,
        job_id="job-1",
        seedless=seedless,
    )


# --- keys ----------------------------------------------------------------------------------------
def test_cache_key_is_stable_across_param_order_and_number_spelling():
    a = cache_key("wan", GRAPH, PARAMS, IMG, 5)
    b = cache_key("wan", GRAPH, dict(reversed(list(PARAMS.items()))), IMG, 5)
    c = cache_key("wan", GRAPH, {**PARAMS, "cfg_scale": 1, "steps": 4.0}, IMG, 5)
    assert a == b == c
    assert len(a) == 64 and int(a, 16) >= 0


def test_cache_key_changes_with_every_input_that_determines_the_output():
    base = cache_key("wan", GRAPH, PARAMS, IMG, 5)
    variants = [
        cache_key("other", GRAPH, PARAMS, IMG, 5),
        cache_key("wan", "h" * 64, PARAMS, IMG, 5),
        cache_key("wan", GRAPH, {**PARAMS, "prompt": "a dog"}, IMG, 5),
        cache_key("wan", GRAPH, {**PARAMS, "cfg_scale": 1.5}, IMG, 5),
        cache_key("wan", GRAPH, PARAMS, hashlib.sha256(b"other image").hexdigest(), 5),
        cache_key("wan", GRAPH, PARAMS, IMG, 6),
        seedless_key("wan", GRAPH, PARAMS, IMG),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_seed_inside_params_does_not_override_the_resolved_seed():
    assert cache_key("wan", GRAPH, {**PARAMS, "seed": -1}, IMG, 5) == cache_key("wan", GRAPH, PARAMS, IMG, 5)


def test_random_seed_has_no_cache_key():
    with pytest.raises(ValueError, match="resolved seed"):
        cache_key("wan", GRAPH, PARAMS, IMG, -1)


def test_image_is_keyed_by_its_bytes_hash_not_a_name():
    with pytest.raises(ValueError, match="image_sha256"):
        cache_key("wan", GRAPH, PARAMS, "input.png", 5)


def test_object_keys_live_together_under_the_cache_key():
    k = cache_key("wan", GRAPH, PARAMS, IMG, 5)
    assert video_key(k) == f"results/{k}/video.mp4"
    assert last_frame_key(k) == f"results/{k}/last_frame.png"
    assert manifest_key(k) == f"results/{k}/manifest.json"
    assert index_key(k) == f"results/latest/{k}.json"
    with pytest.raises(ValueError):
        video_key("../etc")


# --- hit / miss ----------------------------------------------------------------------------------
async def test_miss_then_hit_returns_everything(store, tmp_path):
    cache = ResultCache(store)
    key = cache_key("wan", GRAPH, PARAMS, IMG, 7)
    assert await cache.lookup(key) is None
    saved = await _save(cache, key, tmp_path)
    hit = await cache.lookup(key)
    assert hit is not None
    assert (hit.seed, hit.frames, hit.fps, hit.width, hit.height) == (7, 81, 16.0, 832, 480)
    assert (hit.size, hit.simulated, hit.workflow, hit.job_id) == (4096, True, "wan", "job-1")
    assert hit.video_key == video_key(key) and hit.last_frame_key == last_frame_key(key)
    assert hit.created_at == saved.created_at
    video = await store.head(hit.video_key)
    assert video.content_type == "video/mp4"
    assert video.metadata == {
        "cache-key": key,
        "workflow": "wan",
        "seed": "7",
        "simulated": "true",
        "job-id": "job-1",
    }
    assert (await store.head(hit.last_frame_key)).content_type == "image/png"


async def test_hit_urls_download_the_stored_video(r2, tmp_path):
    cache = ResultCache(r2)
    key = cache_key("wan", GRAPH, PARAMS, IMG, 8)
    await _save(cache, key, tmp_path, seed=8)
    hit = await cache.lookup(key)
    async with httpx.AsyncClient(timeout=30) as http:
        video = await http.get(hit.video_url)
        frame = await http.get(hit.last_frame_url)
    assert video.content == (tmp_path / f"{key[:8]}-8.mp4").read_bytes()
    assert frame.headers["content-type"] == "image/png"


async def test_manifest_without_video_is_a_miss(store, tmp_path):
    cache = ResultCache(store)
    key = cache_key("wan", GRAPH, PARAMS, IMG, 9)
    await _save(cache, key, tmp_path, seed=9)
    await store.delete(video_key(key))  # e.g. a bucket lifecycle rule removed it
    assert await cache.lookup(key) is None


async def test_other_seed_is_a_miss_but_reuse_cached_finds_the_latest(store, tmp_path):
    cache = ResultCache(store)
    any_seed = seedless_key("wan", GRAPH, PARAMS, IMG)
    assert await cache.lookup_latest(any_seed) is None
    k1, k2 = cache_key("wan", GRAPH, PARAMS, IMG, 1), cache_key("wan", GRAPH, PARAMS, IMG, 2)
    await _save(cache, k1, tmp_path, seed=1, seedless=any_seed)
    assert await cache.lookup(k2) is None
    await _save(cache, k2, tmp_path, seed=2, seedless=any_seed)
    latest = await cache.lookup_latest(any_seed)
    assert latest is not None and latest.seed == 2 and latest.key == k2


async def test_random_seed_request_is_a_hit_only_with_reuse_cached(store, tmp_path):
    cache = ResultCache(store)
    params = {**PARAMS, "prompt": "reuse"}
    key = cache_key("wan", GRAPH, params, IMG, 31)
    await _save(cache, key, tmp_path, seed=31, seedless=seedless_key("wan", GRAPH, params, IMG))
    assert (await cache.lookup_request("wan", GRAPH, params, IMG, 31)).key == key
    assert await cache.lookup_request("wan", GRAPH, params, IMG, -1) is None
    reused = await cache.lookup_request("wan", GRAPH, params, IMG, -1, reuse_cached=True)
    assert reused is not None and reused.seed == 31
    assert await cache.lookup_request("wan", GRAPH, params, IMG, 32, reuse_cached=True) is None


# --- coalescing ----------------------------------------------------------------------------------
async def test_concurrent_identical_requests_run_once(tmp_path):
    cache = ResultCache(LocalStore(tmp_path, "http://files.invalid"))  # coalescing needs no store
    calls = 0
    gate = asyncio.Event()

    async def gpu_run() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "result"

    waiters = [asyncio.create_task(cache.run_once("k" * 64, gpu_run)) for _ in range(20)]
    await asyncio.sleep(0.01)
    assert cache.inflight("k" * 64)
    gate.set()
    assert await asyncio.gather(*waiters) == ["result"] * 20
    assert calls == 1
    assert not cache.inflight("k" * 64)


async def test_different_keys_are_not_coalesced(tmp_path):
    cache = ResultCache(LocalStore(tmp_path, "http://files.invalid"))
    seen: list[str] = []

    def run(tag: str):
        async def fn() -> str:
            seen.append(tag)
            await asyncio.sleep(0.01)
            return tag

        return fn

    got = await asyncio.gather(cache.run_once("a" * 64, run("a")), cache.run_once("b" * 64, run("b")))
    assert got == ["a", "b"] and sorted(seen) == ["a", "b"]


async def test_failed_run_propagates_to_all_waiters_and_is_not_cached(tmp_path):
    cache = ResultCache(LocalStore(tmp_path, "http://files.invalid"))
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise RuntimeError("gpu fell over")

    results = await asyncio.gather(
        *(cache.run_once("f" * 64, failing) for _ in range(5)), return_exceptions=True
    )
    assert calls == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "gpu fell over" for r in results)

    async def ok() -> str:
        nonlocal calls
        calls += 1
        return "second time"

    assert await cache.run_once("f" * 64, ok) == "second time"
    assert calls == 2


async def test_cancelled_waiter_does_not_cancel_the_run_for_others(tmp_path):
    cache = ResultCache(LocalStore(tmp_path, "http://files.invalid"))
    gate = asyncio.Event()

    async def gpu_run() -> str:
        await gate.wait()
        return "done"

    first = asyncio.create_task(cache.run_once("c" * 64, gpu_run))
    second = asyncio.create_task(cache.run_once("c" * 64, gpu_run))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    gate.set()
    assert await second == "done"
    assert first.cancelled()


async def test_run_is_cancelled_when_its_last_waiter_leaves(tmp_path):
    cache = ResultCache(LocalStore(tmp_path, "http://files.invalid"))
    cancelled = asyncio.Event()

    async def gpu_run() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    only = asyncio.create_task(cache.run_once("d" * 64, gpu_run))
    await asyncio.sleep(0.01)
    only.cancel()
    await asyncio.wait_for(cancelled.wait(), 2)
    assert not cache.inflight("d" * 64)


async def test_get_or_run_hits_runs_and_joins(r2, tmp_path):
    cache = ResultCache(r2)
    key = cache_key("wan", GRAPH, PARAMS, IMG, 11)
    runs = 0

    async def compute():
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return await _save(cache, key, tmp_path, seed=11)

    outcomes = await asyncio.gather(*(cache.get_or_run(key, compute) for _ in range(8)))
    hows = sorted(how for _, how in outcomes)
    assert runs == 1
    assert hows == ["joined"] * 7 + ["ran"]
    assert len({r.key for r, _ in outcomes}) == 1
    result, how = await cache.get_or_run(key, compute)
    assert how == "hit" and result.seed == 11 and runs == 1
