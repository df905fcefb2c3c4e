"""Named API tokens on the routes that create jobs in groups: a story's segments (made one after another
after the 202) and a batch's jobs record the token's name like a single job does, and a token at its daily
spend limit gets 429 there too, creating nothing."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import func, select

from app.jobs.groups import Batch, Story
from tests.api.conftest import api
from tests.api.test_tokens import as_token
from tests.jobs.fakes import png_bytes

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

CI = "ci-token-0123456789abcdef"
B64 = base64.b64encode(png_bytes(96, 64)).decode()
STORY = {"image_base64": B64, "num_frames": 9, "segments": [{"prompt": "one"}, {"prompt": "two"}]}
BATCH = {"requests": [{"image_base64": B64, "prompt": "a", "seed": 1}, {"image_base64": B64, "prompt": "b"}]}


def tokens(**ci_limits) -> str:
    return json.dumps([{"name": "ci", "token": CI, **ci_limits}])


async def _count(c, model) -> int:
    async with c.world.services.sessionmaker() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def test_story_segments_and_batch_jobs_record_the_submitting_tokens_name(tmp_path):
    async with api(tmp_path, api_token=None, api_tokens=tokens()) as c, as_token(c, CI) as ci:
        services = c.world.services
        r = await ci.post("/vastai/generate-story", json=STORY)
        assert r.status_code == 202, r.text
        assert r.json()["submitted_by"] == "ci"
        # the segments are created in the background, one after the other; the story ends after both
        # (in this fake world its join fails: the fake GPU's videos are not real MP4s)
        story = await services.stories.wait(r.json()["story_id"], 30)
        assert story.terminal and all(story.segment_jobs), (story.state, story.error_message)
        segments = await services.repo.many(story.segment_jobs)
        assert [segments[j].submitted_by for j in story.segment_jobs] == ["ci", "ci"]

        r = await ci.post("/vastai/generate-video/batch", json=BATCH)
        assert r.status_code == 202, r.text
        batch = r.json()
        assert batch["submitted_by"] == "ci"
        assert [j["submitted_by"] for j in batch["jobs"]] == ["ci", "ci"]
        assert (await ci.get(f"/batches/{batch['batch_id']}")).json()["submitted_by"] == "ci"


async def test_token_at_its_daily_spend_limit_gets_429_on_story_and_batch_and_creates_nothing(tmp_path):
    async with (
        api(tmp_path, api_token=None, api_tokens=tokens(daily_spend_usd=1.0)) as c,
        as_token(c, CI) as ci,
    ):
        repo = c.world.services.repo
        spent = await repo.create(workflow="w", request={}, submitted_by="ci")
        await repo.set_fields(spent.id, state="succeeded", cost_usd=1.25)
        for route, body in (("/vastai/generate-story", STORY), ("/vastai/generate-video/batch", BATCH)):
            r = await ci.post(route, json=body)
            assert r.status_code == 429, (route, r.text)
            assert "'ci'" in r.json()["detail"] and "$1.2500 of $1.00" in r.json()["detail"]
        assert [j.id for j in await repo.list(limit=100)] == [spent.id]
        assert await _count(c, Story) == 0 and await _count(c, Batch) == 0
