"""Every bad request gets a 4xx naming the problem and creates nothing: no job row, no stored input image,
no instance rented. One world and one server for the whole module (they must stay untouched anyway); the
API token is set, so every case also proves it got past authentication to the check it is about."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from tests.e2e.conftest import TOKEN, Sim, b64, http_server, png_bytes, sim_api

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _noise_png(side: int = 400) -> bytes:
    """Incompressible: ~480 kB as PNG, over the 100 kB limit of `sim_loopback`."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, "PNG")
    return buf.getvalue()


NOISE_PNG = _noise_png()
GOOD = {"prompt": "waves", "num_frames": 9, "width": 256, "height": 256}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(tmp_path_factory) -> AsyncIterator[Sim]:
    # No ALLOW_LOOPBACK_URLS: the production address rules.
    async with sim_api(tmp_path_factory.mktemp("bad") / "data", token=TOKEN, allow_loopback_urls=False) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim_loopback(tmp_path_factory) -> AsyncIterator[Sim]:
    """A server that may fetch from loopback (local use) with a small byte limit: private addresses and
    oversize images must still be refused."""
    data = tmp_path_factory.mktemp("bad_loopback") / "data"
    async with sim_api(data, token=TOKEN, allow_loopback_urls=True, max_image_bytes=100_000) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def image_origin() -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback server with a perfectly good image: if a guard failed, the fetch would succeed."""
    hits: list[str] = []
    image = png_bytes()

    async def serve(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=image, content_type="image/png")

    async def to_private(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound("http://10.0.0.7/img.png")

    async def to_metadata(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def noise(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=NOISE_PNG, content_type="image/png")

    routes = {"/img.png": serve, "/to-private": to_private, "/to-metadata": to_metadata, "/big.png": noise}
    async with http_server(routes) as url:
        yield url, hits


async def _rejected(sim: Sim, body: dict[str, Any], status: int, field: str, words: str, **kw) -> None:
    r = await sim.client.post("/vastai/generate-video", json=body, **kw)
    assert r.status_code == status, r.text
    answer = r.json()
    if field:
        assert field in [e["field"] for e in answer["errors"]], answer
    assert words.lower() in answer["detail"].lower(), answer
    await _nothing_created(sim)


async def _nothing_created(sim: Sim) -> None:
    assert await sim.services.repo.list(limit=10) == []
    inputs = sim.services.intake.inputs_dir
    assert [p.name for p in inputs.rglob("*") if p.is_file()] == []  # staged copies removed too
    assert not [c for c in sim.emulator.calls if c.route == "create"]
    assert sim.instances_ever_created() == 0 and sim.services.pool.rents_started == 0


async def test_width_not_a_multiple_of_16_is_rejected(sim):
    await _rejected(sim, {**GOOD, "width": 650, "image_base64": b64(png_bytes())}, 422, "width", "width")


async def test_num_frames_not_4n_plus_1_is_rejected(sim):
    body = {**GOOD, "num_frames": 80, "image_base64": b64(png_bytes())}
    await _rejected(sim, body, 422, "num_frames", "num_frames")


async def test_missing_prompt_is_rejected(sim):
    body = {k: v for k, v in GOOD.items() if k != "prompt"} | {"image_base64": b64(png_bytes())}
    await _rejected(sim, body, 422, "prompt", "prompt")


async def test_both_image_url_and_image_base64_is_rejected(sim, image_origin):
    url, hits = image_origin
    body = {**GOOD, "image_url": f"{url}/img.png", "image_base64": b64(png_bytes())}
    await _rejected(sim, body, 422, "image_url", "exactly one of image_url or image_base64")
    assert hits == []


async def test_neither_image_url_nor_image_base64_is_rejected(sim):
    await _rejected(sim, dict(GOOD), 422, "image_url", "exactly one of image_url or image_base64")


async def test_image_url_to_loopback_is_refused_without_fetching(sim, image_origin):
    url, hits = image_origin
    await _rejected(sim, {**GOOD, "image_url": f"{url}/img.png"}, 422, "image_url", "loopback")
    assert hits == []  # refused before any connection


async def test_image_url_to_a_private_address_is_refused(sim):
    await _rejected(sim, {**GOOD, "image_url": "http://10.1.2.3/img.png"}, 422, "image_url", "private")


async def test_image_url_to_the_cloud_metadata_address_is_refused(sim):
    url = "http://169.254.169.254/latest/meta-data/"
    await _rejected(sim, {**GOOD, "image_url": url}, 422, "image_url", "metadata")


async def test_image_url_that_is_not_http_is_refused(sim):
    await _rejected(sim, {**GOOD, "image_url": "file:///etc/passwd"}, 422, "image_url", "http")


async def test_image_url_redirecting_to_a_private_address_is_refused(sim_loopback, image_origin):
    url, hits = image_origin
    body = {**GOOD, "image_url": f"{url}/to-private"}
    await _rejected(sim_loopback, body, 422, "image_url", "private")
    assert hits[-1] == "/to-private"  # the first hop was allowed (loopback), the redirect was not


async def test_image_url_redirecting_to_the_metadata_address_is_refused(sim_loopback, image_origin):
    url, _ = image_origin
    body = {**GOOD, "image_url": f"{url}/to-metadata"}
    await _rejected(sim_loopback, body, 422, "image_url", "metadata")


async def test_image_url_over_the_byte_limit_is_rejected(sim_loopback, image_origin):
    url, _ = image_origin
    await _rejected(sim_loopback, {**GOOD, "image_url": f"{url}/big.png"}, 413, "image_url", "byte limit")


async def test_image_base64_over_the_byte_limit_is_rejected(sim_loopback):
    body = {**GOOD, "image_base64": b64(NOISE_PNG)}
    await _rejected(sim_loopback, body, 413, "image_base64", "byte limit")


async def test_non_image_bytes_are_rejected(sim):
    body = {**GOOD, "image_base64": b64(b"%PDF-1.4 definitely not a picture" * 20)}
    await _rejected(sim, body, 422, "image_base64", "not a decodable image")


async def test_invalid_base64_is_rejected(sim):
    await _rejected(sim, {**GOOD, "image_base64": "@@not base64@@"}, 422, "image_base64", "base64")


async def test_image_with_too_many_pixels_is_rejected(sim):
    big = png_bytes(4100, 4100)  # 16.8 Mpx > MAX_IMAGE_PIXELS (4096 x 4096)
    await _rejected(sim, {**GOOD, "image_base64": b64(big)}, 422, "image_base64", "pixel limit")


async def test_unknown_workflow_is_rejected(sim):
    body = {**GOOD, "workflow": "no_such_workflow", "image_base64": b64(png_bytes())}
    await _rejected(sim, body, 422, "workflow", "no_such_workflow")


async def test_webhook_url_to_a_private_address_is_refused(sim):
    body = {**GOOD, "image_base64": b64(png_bytes()), "webhook_url": "http://192.168.1.10/hook"}
    await _rejected(sim, body, 422, "webhook_url", "private")


async def test_wrong_bearer_token_is_rejected(sim):
    body = {**GOOD, "image_base64": b64(png_bytes())}
    headers = {"Authorization": "Bearer not-the-token"}
    await _rejected(sim, body, 401, "", "bearer token", headers=headers)
    r = await sim.client.get("/jobs", headers={"Authorization": ""})
    assert r.status_code == 401
    assert (await sim.client.get("/healthz", headers={"Authorization": ""})).status_code == 200


async def test_the_same_server_still_accepts_a_good_request(sim):
    """Last: proves the rejections above were about their inputs, not a server that refuses everything."""
    r = await sim.client.post("/vastai/generate-video", json={**GOOD, "image_base64": b64(png_bytes())})
    assert r.status_code == 202, r.text
    job = await sim.finished(r.json()["job_id"])
    assert job["state"] == "succeeded", job["error"]
