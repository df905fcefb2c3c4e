import httpx
import pytest

from tests.api.conftest import api

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL


async def test_missing_or_wrong_token_is_401_and_creates_nothing(tmp_path):
    async with api(tmp_path) as c:
        body = {"image_base64": "aGVsbG8=", "prompt": "x"}
        r = await c.post("/vastai/generate-video", json=body, headers={"Authorization": ""})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = await c.post("/vastai/generate-video", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        for path in ("/jobs", "/metrics", "/jobs/job_x", "/jobs/job_x/events"):
            assert (await c.get(path, headers={"Authorization": ""})).status_code == 401, path
        assert await c.world.services.repo.list() == []


async def test_health_probes_need_no_token(tmp_path):
    async with api(tmp_path) as c:
        bare = httpx.AsyncClient(transport=c._transport, base_url="http://testserver")
        assert (await bare.get("/healthz")).json() == {"status": "ok"}
        r = await bare.get("/readyz")
        assert r.status_code == 200 and r.json()["simulated"] is True
        assert (await bare.get("/openapi.json")).status_code == 200
        assert (await bare.get("/docs")).status_code == 200
        await bare.aclose()


async def test_no_token_configured_means_open_api(tmp_path):
    async with api(tmp_path, api_token=None) as c:
        assert (await c.get("/jobs", headers={"Authorization": ""})).status_code == 200
