"""`/docs` (Swagger UI) and `/redoc` (ReDoc) render in a real headless Chromium with no internet: their
assets come from the package (fastapi-offline), and the page asks no other host for anything."""

from __future__ import annotations

import contextlib

from app.api.app import create_app
from tests.jobs.harness import world
from tests.support.browser import Requests, chromium, distinct_colors
from tests.support.liveserver import LiveServer


def _fake_world_app(tmp_path):
    @contextlib.asynccontextmanager
    async def make(_port: int):
        async with world(tmp_path, api_token="docs-token-123") as w:
            yield create_app(w.services, manage_lifecycle=False), w

    return make


def test_docs_render_without_internet(tmp_path):
    with LiveServer(_fake_world_app(tmp_path)) as server, chromium() as browser:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        seen = Requests(context)
        page = context.new_page()

        page.goto(f"{server.url}/docs")
        # Swagger UI drew the schema: the title and the generate route's operation block
        page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
        assert "comfyfleet" in page.inner_text(".swagger-ui .info .title")
        page.wait_for_selector("#operations-jobs-generate_video_vastai_generate_video_post", timeout=20_000)
        shot = page.screenshot(full_page=False)
        assert distinct_colors(shot) > 20, "the /docs screenshot is (nearly) blank"

        page.goto(f"{server.url}/redoc")
        # ReDoc drew the schema: the API title and the generate operation in its menu
        page.wait_for_selector("h1:has-text('comfyfleet')", timeout=30_000)
        page.locator("h2", has_text="Generate Video").first.wait_for(timeout=30_000)
        assert distinct_colors(page.screenshot(full_page=False)) > 20, "the /redoc screenshot is blank"

        assert seen.foreign(server.url) == [], (seen.failed, "the docs asked another host for something")
        assert not [u for u in seen.failed if "/static-offline-docs/" in u], seen.failed
        context.close()
