"""image_url must not reach loopback, private, link-local or metadata addresses: checked after DNS
resolution, connected to the checked address, and again on every redirect."""

import pytest
from aiohttp import web

from tests.api.conftest import api, http_server
from tests.jobs.fakes import png_bytes


async def _rejected(c, url, needle):
    r = await c.post("/vastai/generate-video", json={"prompt": "x", "image_url": url})
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "image_url"
    assert needle in r.json()["detail"], r.json()["detail"]
    assert await c.world.services.repo.list() == []


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://127.0.0.1:9/x.png", "loopback"),
        ("http://localhost/x.png", "loopback"),
        ("http://[::1]/x.png", "loopback"),
        ("http://10.1.2.3/x.png", "private"),
        ("http://192.168.0.10/x.png", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/latest/", "metadata"),
        ("http://169.254.10.10/x.png", "link-local"),
        ("http://[::ffff:127.0.0.1]/x.png", "loopback"),
        ("http://0.0.0.0/x.png", "not a public address"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://example.com/x", "http:// or https://"),
    ],
)
async def test_internal_addresses_are_refused(tmp_path, url, needle):
    async with api(tmp_path) as c:
        await _rejected(c, url, needle)


async def test_hostname_resolving_to_private_address_is_refused(tmp_path):
    async def resolver(host, port):
        return {"images.example.com": ["203.0.113.7", "10.0.0.8"]}[host]

    async with api(tmp_path, resolver=resolver) as c:
        await _rejected(c, "https://images.example.com/cat.png", "private")


async def test_redirect_to_metadata_address_is_refused(tmp_path):
    async def redirect(_req):
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/iam")

    async with http_server({"/img.png": redirect}) as base, api(tmp_path, allow_loopback=True) as c:
        await _rejected(c, f"{base}/img.png", "metadata")


async def test_redirect_to_private_host_name_is_refused(tmp_path):
    async def resolver(host, port):
        return {"127.0.0.1": ["127.0.0.1"], "internal.corp": ["192.168.1.5"]}[host]

    async def redirect(_req):
        raise web.HTTPFound("http://internal.corp/secret.png")

    async with (
        http_server({"/img.png": redirect}) as base,
        api(tmp_path, allow_loopback=True, resolver=resolver) as c,
    ):
        await _rejected(c, f"{base}/img.png", "private")


async def test_public_image_is_fetched_through_redirects(tmp_path):
    async def redirect(_req):
        raise web.HTTPFound("/real.png")

    async def image(_req):
        return web.Response(body=png_bytes(64, 64), content_type="image/png")

    async with (
        http_server({"/img.png": redirect, "/real.png": image}) as base,
        api(tmp_path, allow_loopback=True) as c,
    ):
        r = await c.post("/vastai/generate-video", json={"prompt": "x", "image_url": f"{base}/img.png"})
        assert r.status_code == 202, r.text
        job = await c.world.wait(r.json()["job_id"])
        assert job.state == "succeeded" and job.request["image_size"] == [64, 64]


async def test_oversize_download_is_cut_off_at_the_limit(tmp_path):
    async def huge(request):
        resp = web.StreamResponse()  # no Content-Length: only streaming with a cap catches it
        resp.content_type = "image/png"
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"\0" * 65536)
        return resp

    async with (
        http_server({"/big.png": huge}) as base,
        api(tmp_path, allow_loopback=True, max_image_bytes=200_000) as c,
    ):
        r = await c.post("/vastai/generate-video", json={"prompt": "x", "image_url": f"{base}/big.png"})
        assert r.status_code == 413 and r.json()["errors"][0]["field"] == "image_url"
        assert await c.world.services.repo.list() == []


async def test_http_error_from_image_host_is_reported(tmp_path):
    async def missing(_req):
        raise web.HTTPNotFound()

    async with http_server({"/gone.png": missing}) as base, api(tmp_path, allow_loopback=True) as c:
        await _rejected(c, f"{base}/gone.png", "HTTP 404")


@pytest.mark.parametrize(
    ("addr", "needle"),
    [
        ("2002:7f00:1::1", "loopback"),  # 6to4 form of 127.0.0.1
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 form of 169.254.169.254
        ("2002:a00:7::", "private"),  # 6to4 form of 10.0.0.7
    ],
)
async def test_6to4_address_embedding_an_internal_ipv4_is_refused(tmp_path, addr, needle):
    async def resolver(host, port):
        return {"images.example.com": [addr]}[host]

    async with api(tmp_path, resolver=resolver) as c:
        await _rejected(c, "https://images.example.com/cat.png", needle)


async def test_image_host_trickling_bytes_is_cut_off_at_the_total_deadline(tmp_path):
    import asyncio
    import time

    from app.errors import ValidationError
    from app.intake import ImageIntake

    async def trickle(request):
        resp = web.StreamResponse()
        resp.content_type = "image/png"
        await resp.prepare(request)
        for _ in range(200):  # each read well inside the per-read timeout; 20 s in all
            await resp.write(b"\0" * 16)
            await asyncio.sleep(0.1)
        return resp

    intake = ImageIntake(
        tmp_path / "inputs",
        max_bytes=10**6,
        max_pixels=10**7,
        allow_loopback=True,
        timeout_s=1.0,
        total_timeout_s=1.0,
    )
    async with http_server({"/slow.png": trickle}) as base:
        t0 = time.monotonic()
        with pytest.raises(ValidationError) as err:
            await intake.from_url(f"{base}/slow.png")
        assert time.monotonic() - t0 < 5
    assert err.value.field == "image_url" and "took longer" in err.value.reason
    assert [p for p in (tmp_path / "inputs").rglob("*") if p.is_file()] == []
