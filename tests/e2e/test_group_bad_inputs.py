"""Bad input to the story, batch and fleet routes: a 4xx naming the field (with the segment's or request's
index), and nothing created: no job, story or batch row, no stored image, no instance rented. One world
and one server for the module; the API token is set, so every case got past authentication."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.e2e.conftest import TOKEN, Sim, b64, png_bytes, sim_api

pytestmark = pytest.mark.asyncio(loop_scope="module")

IMAGE = b64(png_bytes())
SEG = {"prompt": "waves", "num_frames": 9}
REQ = {"image_base64": IMAGE, "prompt": "waves", "num_frames": 9, "width": 256, "height": 256}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim(tmp_path_factory) -> AsyncIterator[Sim]:
    data = tmp_path_factory.mktemp("group_bad") / "data"
    async with sim_api(
        data, token=TOKEN, allow_loopback_urls=False, story_max_segments=3, batch_max_requests=4
    ) as s:
        yield s


async def _nothing_created(sim: Sim) -> None:
    assert await sim.services.repo.list(limit=10) == []
    assert await sim.services.groups.list_stories() == []
    assert await sim.services.groups.running_batches() == []
    inputs = sim.services.intake.inputs_dir
    assert [p.name for p in inputs.rglob("*") if p.is_file()] == []  # staged copies removed too
    assert sim.instances_ever_created() == 0 and sim.services.pool.rents_started == 0


async def _rejected(sim: Sim, route: str, body: Any, field: str, words: str, status: int = 422, **kw) -> None:
    r = (
        await sim.client.post(route, json=body, **kw)
        if body is not None
        else await sim.client.post(route, **kw)
    )
    assert r.status_code == status, r.text
    answer = r.json()
    assert field in [e["field"] for e in answer["errors"]], answer
    assert words.lower() in answer["detail"].lower(), answer
    await _nothing_created(sim)


def story(*segments: dict, **extra: Any) -> dict:
    return {"image_base64": IMAGE, "width": 256, "height": 256, "segments": list(segments), **extra}


# --- stories -------------------------------------------------------------------------------------------
async def test_story_segment_with_bad_frame_count_names_the_segment(sim):
    await _rejected(
        sim, "/vastai/generate-story", story(SEG, {**SEG, "num_frames": 10}), "segments[1].num_frames", "4n+1"
    )


async def test_story_segment_with_a_wrongly_typed_field_names_the_segment(sim):
    await _rejected(
        sim,
        "/vastai/generate-story",
        story(SEG, {**SEG, "num_frames": "9"}),
        "segments[1].num_frames",
        "integer",
    )


async def test_story_segment_with_unknown_workflow_is_refused_before_fetching(sim):
    body = story(SEG, {**SEG, "workflow": "no_such_workflow"})
    await _rejected(sim, "/vastai/generate-story", body, "segments[1].workflow", "no_such_workflow")


async def test_story_segments_with_different_fps_cannot_be_joined(sim):
    await _rejected(
        sim, "/vastai/generate-story", story(SEG, {**SEG, "fps": 24}), "segments[1].fps", "joined"
    )


async def test_story_segment_cannot_carry_a_webhook_or_an_image(sim):
    body = story({**SEG, "webhook_url": "https://example.com/h"})
    await _rejected(sim, "/vastai/generate-story", body, "segments[0].webhook_url", "extra")
    body = story({**SEG, "image_base64": IMAGE})
    await _rejected(sim, "/vastai/generate-story", body, "segments[0].image_base64", "extra")


async def test_story_without_an_image_is_refused(sim):
    body = story(SEG)
    del body["image_base64"]
    await _rejected(sim, "/vastai/generate-story", body, "image_url", "exactly one")


async def test_story_with_two_images_is_refused(sim):
    await _rejected(
        sim,
        "/vastai/generate-story",
        story(SEG, image_url="https://example.com/x.png"),
        "image_url",
        "exactly one",
    )


async def test_story_without_segments_or_with_too_many_is_refused(sim):
    await _rejected(sim, "/vastai/generate-story", story(), "segments", "at least one")
    await _rejected(sim, "/vastai/generate-story", story(SEG, SEG, SEG, SEG), "segments", "at most 3")


async def test_story_image_that_does_not_decode_is_refused(sim):
    body = story(SEG, image_base64=b64(b"not an image at all" * 10))
    await _rejected(sim, "/vastai/generate-story", body, "image_base64", "decodable")


async def test_story_multipart_without_its_request_part_is_refused(sim):
    files = {"image": ("x.png", png_bytes(), "image/png")}
    await _rejected(sim, "/vastai/generate-story", None, "request", "request", files=files)


async def test_story_multipart_with_a_bad_segment_removes_the_uploaded_image(sim):
    files = {"image": ("x.png", png_bytes(), "image/png")}
    data = {"request": json.dumps({"segments": [{**SEG, "num_frames": 8}]})}
    await _rejected(
        sim, "/vastai/generate-story", None, "segments[0].num_frames", "4n+1", files=files, data=data
    )


# --- batches -------------------------------------------------------------------------------------------
async def test_batch_with_one_bad_request_names_its_index_and_creates_nothing(sim):
    body = {"requests": [REQ, REQ, REQ, {**REQ, "prompt": "  "}]}
    await _rejected(sim, "/vastai/generate-video/batch", body, "requests[3].prompt", "empty")


async def test_batch_request_with_a_wrongly_typed_field_names_its_index(sim):
    body = {"requests": [REQ, {**REQ, "steps": 4.5}]}
    await _rejected(sim, "/vastai/generate-video/batch", body, "requests[1].steps", "integer")


async def test_batch_request_whose_image_url_is_private_is_refused_after_the_good_ones_were_fetched(sim):
    body = {
        "requests": [
            REQ,
            {**{k: v for k, v in REQ.items() if k != "image_base64"}, "image_url": "http://10.1.2.3/a.png"},
        ]
    }
    await _rejected(sim, "/vastai/generate-video/batch", body, "requests[1].image_url", "private")


async def test_batch_request_without_an_image_names_its_index(sim):
    body = {"requests": [REQ, {k: v for k, v in REQ.items() if k != "image_base64"}]}
    await _rejected(sim, "/vastai/generate-video/batch", body, "requests[1].image_url", "exactly one")


async def test_batch_request_with_wait_is_refused(sim):
    await _rejected(
        sim,
        "/vastai/generate-video/batch",
        {"requests": [{**REQ, "wait": True}]},
        "requests[0].wait",
        "batch",
    )


async def test_empty_or_oversized_batch_is_refused(sim):
    await _rejected(sim, "/vastai/generate-video/batch", {"requests": []}, "requests", "at least one")
    await _rejected(sim, "/vastai/generate-video/batch", {"requests": [REQ] * 5}, "requests", "at most 4")


async def test_batch_webhook_to_a_private_address_is_refused(sim):
    body = {"requests": [REQ], "webhook_url": "http://192.168.1.10/hook"}
    await _rejected(sim, "/vastai/generate-video/batch", body, "webhook_url", "private")


# --- unknown ids and bad queries -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/stories/story_nope"),
        ("DELETE", "/stories/story_nope"),
        ("GET", "/stories/story_nope/events"),
        ("GET", "/batches/batch_nope"),
        ("GET", "/instances/123456"),
        ("POST", "/instances/123456/verify"),
        ("DELETE", "/instances/123456"),
    ],
)
async def test_unknown_ids_are_404_and_change_nothing(sim, method, path):
    r = await sim.client.request(method, path)
    assert r.status_code == 404, r.text
    assert "no " in r.json()["detail"]
    await _nothing_created(sim)


async def test_verify_with_a_non_boolean_refetch_is_refused(sim):
    r = await sim.client.post("/instances/123/verify", params={"refetch": "perhaps"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "refetch"
    await _nothing_created(sim)


async def test_new_routes_need_the_token(sim):
    for method, path in [
        ("GET", "/instances"),
        ("GET", "/spend"),
        ("GET", "/stories"),
        ("POST", "/vastai/generate-story"),
        ("POST", "/vastai/generate-video/batch"),
    ]:
        r = await sim.client.request(method, path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401, (method, path, r.text)
    await _nothing_created(sim)


async def test_openapi_documents_the_new_routes_and_every_reference_resolves(sim):
    spec = (await sim.client.get("/openapi.json")).json()
    for path in (
        "/vastai/generate-story",
        "/vastai/generate-video/batch",
        "/stories/{story_id}",
        "/batches/{batch_id}",
    ):
        assert path in spec["paths"], path
    for path in ("/instances", "/instances/{instance_id}", "/instances/{instance_id}/verify", "/spend"):
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert "StoryRequest" in refs and refs <= set(schemas), refs - set(schemas)
