"""One base URL for every URL the API gives out: PUBLIC_BASE_URL when set, else the base the request came
in on. `status_url` said `localhost` while `video_url` said `127.0.0.1` for the same server: never again."""

from __future__ import annotations

from typing import Any

import httpx

from app.api.app import create_app
from tests.e2e.conftest import b64, png_bytes, sim_api

SMALL = {"num_frames": 9, "width": 256, "height": 256}


def _urls(obj: Any) -> list[str]:
    """Every absolute URL in a JSON body (any depth)."""
    if isinstance(obj, dict):
        return [u for v in obj.values() for u in _urls(v)]
    if isinstance(obj, list):
        return [u for v in obj for u in _urls(v)]
    return [obj] if isinstance(obj, str) and obj.startswith(("http://", "https://")) else []


async def _everything(client: httpx.AsyncClient, image: str, public: str = "") -> list[dict[str, Any]]:
    """A job, a story and a batch, each waited for, as the client sees them."""
    job = await client.post(
        "/vastai/generate-video", json={"image_base64": image, "prompt": "a", **SMALL, "wait": 60}
    )
    assert job.status_code == 200, job.text
    story = await client.post(
        "/vastai/generate-story",
        json={"image_base64": image, "seed": 3, "width": 256, "height": 256, "wait": 60,
              "segments": [{"prompt": "b", "num_frames": 9}, {"prompt": "c", "num_frames": 9}]},
    )  # fmt: skip
    assert story.status_code == 200, story.text
    batch = await client.post(
        "/vastai/generate-video/batch", json={"requests": [{"image_base64": image, "prompt": "a", **SMALL}]}
    )
    assert batch.status_code == 202, batch.text
    again = await client.get(batch.json()["status_url"].removeprefix(public))  # (behind a proxy at `public`)
    assert again.status_code == 200, again.text
    bodies = [job.json(), story.json(), batch.json(), again.json()]
    assert bodies[0]["result"]["video_url"] and bodies[1]["result"]["video_url"]
    assert bodies[0]["status_url"] and bodies[1]["status_url"] and bodies[2]["status_url"]
    return bodies


async def test_public_base_url_defaults_to_the_request_base_for_status_url_video_url_story_and_batch_urls(
    tmp_path,
):
    image = b64(png_bytes())
    async with sim_api(tmp_path, public_url=None) as sim:
        app = create_app(sim.services, manage_lifecycle=False)
        for base in ("http://localhost:8000", "http://127.0.0.1:8000"):  # one server, two ways in
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=base, timeout=60
            ) as c:
                bodies = await _everything(c, image)
                listed = (await c.get("/jobs")).json()
                urls = [u for body in [*bodies, listed] for u in _urls(body)]
                assert urls and all(u.startswith(base + "/") for u in urls), (base, urls)
                job = (await c.get(bodies[0]["status_url"])).json()
                assert job["status_url"] == bodies[0]["status_url"]
                video = await c.get(job["result"]["video_url"])  # the URL given out works on that base
                assert video.status_code == 200 and video.content[4:8] == b"ftyp"


async def test_public_base_url_setting_is_used_for_every_url(tmp_path):
    image = b64(png_bytes())
    public = "https://gpu.example.com/api"
    async with sim_api(tmp_path, public_url=public) as sim:
        urls = [u for body in await _everything(sim.client, image, public) for u in _urls(body)]
        assert urls and all(u.startswith(public + "/") for u in urls), urls
        assert any("/files/" in u for u in urls) and any("/jobs/" in u for u in urls)
        assert any("/stories/" in u for u in urls) and any("/batches/" in u for u in urls)
