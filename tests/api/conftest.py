import contextlib
import socket

import httpx
import pytest
from aiohttp import web

from app.api.app import create_app
from app.intake import ImageIntake
from tests.jobs.harness import world

TOKEN = "test-api-token-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def api(tmp_path, *, allow_loopback=False, resolver=None, **kw):
    kw.setdefault("api_token", TOKEN)
    intake = ImageIntake(
        tmp_path / "data" / "inputs",
        max_bytes=kw.pop("max_image_bytes", 2_000_000),
        max_pixels=kw.pop("max_image_pixels", 4096 * 4096),
        allow_loopback=allow_loopback,
        resolver=resolver,
        max_audio_bytes=kw.pop("max_audio_bytes", 2_000_000),
        max_audio_seconds=kw.pop("max_audio_seconds", 60.0),
    )
    async with world(tmp_path, intake=intake, **kw) as w:
        app = create_app(w.services, manage_lifecycle=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            client.world = w
            yield client


@contextlib.asynccontextmanager
async def http_server(routes):
    """A real loopback HTTP server: routes = {path: handler}."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def token():
    return TOKEN
