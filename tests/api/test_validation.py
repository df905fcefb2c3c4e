"""Every bad input gets a 4xx that names the field, and creates no job (and leaves no file)."""

import base64

import pytest

from tests.api.conftest import api
from tests.jobs.fakes import png_bytes

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

B64 = base64.b64encode(png_bytes(96, 64)).decode()


async def _rejected(c, body, field, status=422):
    r = await c.post("/vastai/generate-video", json=body)
    assert r.status_code == status, r.text
    data = r.json()
    assert field in [e["field"] for e in data["errors"]], data
    assert field in data["detail"]
    assert await c.world.services.repo.list() == []
    inputs = c.world.settings.data_dir / "inputs"
    assert [p for p in inputs.rglob("*") if p.is_file()] == []
    return data


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image_base64": B64}, "prompt"),
        ({"image_base64": B64, "prompt": "x", "num_frames": "many"}, "num_frames"),
        ({"image_base64": B64, "prompt": "x", "cfg_scale": "high"}, "cfg_scale"),
        ({"image_base64": B64, "prompt": "x", "colour": "red"}, "colour"),
        ({"image_base64": B64, "prompt": "x", "num_frames": 80}, "num_frames"),
        ({"image_base64": B64, "prompt": "x", "steps": 0}, "steps"),
        ({"image_base64": B64, "prompt": "x", "width": 650}, "width"),
        ({"image_base64": B64, "prompt": "   "}, "prompt"),
        ({"image_base64": B64, "prompt": "x", "workflow": "nope"}, "workflow"),
    ],
)
async def test_bad_parameter_is_422_naming_the_field(tmp_path, body, field):
    async with api(tmp_path) as c:
        await _rejected(c, body, field)


async def test_no_image_or_both_images_is_rejected(tmp_path):
    async with api(tmp_path) as c:
        await _rejected(c, {"prompt": "x"}, "image_url")
        await _rejected(
            c, {"prompt": "x", "image_base64": B64, "image_url": "https://example.com/a.png"}, "image_url"
        )


async def test_invalid_base64_is_rejected(tmp_path):
    async with api(tmp_path) as c:
        await _rejected(c, {"prompt": "x", "image_base64": "%%%not base64%%%"}, "image_base64")


async def test_bytes_that_are_not_an_image_are_rejected(tmp_path):
    async with api(tmp_path) as c:
        data = base64.b64encode(b"<html>definitely not a png</html>").decode()
        d = await _rejected(c, {"prompt": "x", "image_base64": data}, "image_base64")
        assert "decodable image" in d["detail"]


async def test_truncated_image_is_rejected(tmp_path):
    async with api(tmp_path) as c:
        raw = png_bytes(200, 200)
        data = base64.b64encode(raw[: len(raw) // 2]).decode()
        await _rejected(c, {"prompt": "x", "image_base64": data}, "image_base64")


async def test_oversize_image_is_413(tmp_path):
    async with api(tmp_path, max_image_bytes=1000) as c:
        big = base64.b64encode(png_bytes(400, 400) + b"\0" * 2000).decode()
        await _rejected(c, {"prompt": "x", "image_base64": big}, "image_base64", status=413)


async def test_too_many_pixels_is_rejected_before_decoding(tmp_path):
    async with api(tmp_path, max_image_pixels=100 * 100) as c:
        d = await _rejected(
            c, {"prompt": "x", "image_base64": base64.b64encode(png_bytes(200, 200)).decode()}, "image_base64"
        )
        assert "pixel limit" in d["detail"]


async def test_webhook_url_must_be_http(tmp_path):
    async with api(tmp_path) as c:
        await _rejected(
            c, {"prompt": "x", "image_base64": B64, "webhook_url": "ftp://example.com/x"}, "webhook_url"
        )


async def test_huge_request_body_is_refused_without_reading_it_all(tmp_path):
    sent = 0

    async def body():
        nonlocal sent
        yield b'{"prompt": "x", "image_base64": "'
        for _ in range(800):  # 50 MB of base64 against a 1000-byte image limit
            sent += 65536
            yield b"A" * 65536
        yield b'"}'

    # the body limit covers every file a request may carry (two images and audio): keep all of them small
    async with api(tmp_path, max_image_bytes=1000, max_audio_bytes=1000) as c:
        r = await c.post(
            "/vastai/generate-video", content=body(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413, r.text
        assert r.json()["errors"][0]["field"]
        assert sent < 4 * 1024 * 1024, f"the server read {sent} bytes of the body"
        assert await c.world.services.repo.list() == []


async def test_declared_oversize_body_is_413_before_reading(tmp_path):
    async with api(tmp_path, max_image_bytes=1000, max_audio_bytes=1000) as c:
        big = b'{"prompt": "x", "image_base64": "' + b"A" * 5_000_000 + b'"}'
        r = await c.post("/vastai/generate-video", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.json()["errors"][0]["field"] == "body"


@pytest.mark.parametrize(
    ("field", "literal"), [("cfg_scale", "NaN"), ("cfg_scale", "Infinity"), ("wait", "NaN")]
)
async def test_nan_or_infinity_in_a_number_field_is_a_422_naming_it(tmp_path, field, literal):
    """Python's JSON parser accepts NaN and Infinity; they used to reach the cache key and fail (500)."""
    async with api(tmp_path) as c:
        raw = f'{{"image_base64": "{B64}", "prompt": "x", "{field}": {literal}}}'
        r = await c.post("/vastai/generate-video", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert any(e["field"].startswith(field) for e in r.json()["errors"])
        assert await c.world.services.repo.list() == []


async def test_body_that_is_not_utf8_is_a_422_naming_the_body(tmp_path):
    async with api(tmp_path) as c:
        r = await c.post(
            "/vastai/generate-video", content=b"\xffc", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422, r.text
        assert r.json()["errors"] == [
            {"field": "body", "message": "not valid JSON: the body is not UTF-8 text"}
        ]
        assert await c.world.services.repo.list() == []


async def test_job_id_with_a_nul_character_is_not_found(tmp_path):
    """PostgreSQL refuses NUL in a text parameter (an error, not "no row"): such an id is a plain 404."""
    async with api(tmp_path) as c:
        for method in ("GET", "DELETE"):
            r = await c.request(method, "/jobs/job_%00x")
            assert r.status_code == 404, r.text
        assert (await c.get("/jobs/job_%00x/events")).status_code == 404
