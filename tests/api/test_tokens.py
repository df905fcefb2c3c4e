"""Named API tokens: `X-API-Key` beside `Authorization: Bearer`, the job records the token's name (never the
token), and a token over its request rate or daily spend limit gets 429 saying which limit and when."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from sqlalchemy import select

from app.api.app import create_app
from app.api.auth import utc_day_start
from app.errors import ConfigError
from app.jobs.models import Job
from tests.api.conftest import api
from tests.jobs.fakes import png_bytes
from tests.jobs.harness import world

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

CI = "ci-token-0123456789abcdef"
WEB = "web-token-0123456789abcdef"
B64 = base64.b64encode(png_bytes(96, 64)).decode()
BODY = {"image_base64": B64, "prompt": "waves"}


def tokens(**ci_limits) -> str:
    return json.dumps([{"name": "ci", "token": CI, **ci_limits}, {"name": "web", "token": WEB}])


def as_token(c: httpx.AsyncClient, token: str | None, *, header: str = "bearer") -> httpx.AsyncClient:
    """A client on the same app sending `token` (or nothing) its own way."""
    headers = {}
    if token is not None:
        headers = {"Authorization": f"Bearer {token}"} if header == "bearer" else {"X-API-Key": token}
    return httpx.AsyncClient(transport=c._transport, base_url="http://testserver", headers=headers)


async def _job_count(c) -> int:
    return len(await c.world.services.repo.list(limit=1000))


async def test_x_api_key_is_accepted_like_a_bearer_token(tmp_path):
    async with api(tmp_path, api_token=None, api_tokens=tokens()) as c:
        async with as_token(c, CI, header="x-api-key") as ci, as_token(c, WEB) as web:
            r = await ci.post("/vastai/generate-video", json=BODY)
            assert r.status_code == 202, r.text
            assert (await web.get(f"/jobs/{r.json()['job_id']}")).status_code == 200
        async with as_token(c, "not-a-token-at-all-0000", header="x-api-key") as wrong:
            r = await wrong.get("/jobs")
            assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]


async def test_job_records_the_submitting_tokens_name_never_the_token(tmp_path):
    async with api(tmp_path, api_token="the-old-single-token", api_tokens=tokens()) as c:
        async with as_token(c, CI) as ci, as_token(c, "the-old-single-token", header="x-api-key") as old:
            by_ci = (await ci.post("/vastai/generate-video", json=BODY)).json()
            by_old = (await old.post("/vastai/generate-video", json={**BODY, "seed": 7})).json()
            assert by_ci["submitted_by"] == "ci" and by_old["submitted_by"] == "default"
            assert (await ci.get(f"/jobs/{by_ci['job_id']}")).json()["submitted_by"] == "ci"
        await c.world.wait(by_ci["job_id"])
        async with c.world.services.sessionmaker() as s:
            rows = (await s.execute(select(Job.__table__))).mappings().all()
        stored = json.dumps([dict(r) for r in rows], default=str)
        assert '"submitted_by": "ci"' in stored
        for secret in (CI, WEB, "the-old-single-token"):
            assert secret not in stored


async def test_open_api_records_no_token_name(tmp_path):
    async with api(tmp_path, api_token=None) as c, as_token(c, None) as anyone:
        r = await anyone.post("/vastai/generate-video", json=BODY)
        assert r.status_code == 202 and r.json()["submitted_by"] is None


async def test_token_over_its_request_rate_gets_429_naming_the_rate_and_creates_nothing(tmp_path):
    async with api(tmp_path, api_token=None, api_tokens=tokens(rate="3/minute")) as c:
        async with as_token(c, CI) as ci, as_token(c, WEB) as web:
            for _ in range(3):
                assert (await ci.get("/jobs")).status_code == 200
            r = await ci.post("/vastai/generate-video", json=BODY)
            assert r.status_code == 429
            assert "'ci'" in r.json()["detail"] and "3/minute" in r.json()["detail"]
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert await _job_count(c) == 0
            assert (await web.get("/jobs")).status_code == 200  # another token has its own allowance
            assert (await web.post("/vastai/generate-video", json=BODY)).status_code == 202


async def test_token_at_its_daily_spend_limit_cannot_submit_but_can_still_read(tmp_path):
    async with api(tmp_path, api_token=None, api_tokens=tokens(daily_spend_usd=1.0)) as c:
        repo = c.world.services.repo
        spent = await repo.create(workflow="w", request={}, submitted_by="ci")
        await repo.set_fields(spent.id, state="succeeded", cost_usd=1.25)
        async with as_token(c, CI) as ci, as_token(c, WEB) as web:
            r = await ci.post("/vastai/generate-video", json=BODY)
            assert r.status_code == 429, r.text
            detail = r.json()["detail"]
            assert "'ci'" in detail and "$1.2500 of $1.00" in detail and "00:00 UTC" in detail
            assert int(r.headers["retry-after"]) <= 86400
            assert await _job_count(c) == 1
            assert (await ci.get(f"/jobs/{spent.id}")).status_code == 200
            assert (await web.post("/vastai/generate-video", json=BODY)).status_code == 202

            # yesterday's spend does not count against today
            await repo.set_fields(spent.id, created_at=utc_day_start(time.time()) - 60)
            r = await ci.post("/vastai/generate-video", json={**BODY, "seed": 1})
            assert r.status_code == 202, r.text


async def test_malformed_api_tokens_refuse_to_start_the_api(tmp_path):
    async with world(tmp_path, start=False, api_tokens='[{"name": "ci", "token": "tiny-secret"}]') as w:
        with pytest.raises(ConfigError, match="entry 0") as exc:
            create_app(w.services)
        assert "tiny-secret" not in str(exc.value)
