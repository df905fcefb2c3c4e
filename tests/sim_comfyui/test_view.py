"""GET /view against http_view.json: status, the same headers (Content-Type, Content-Disposition,
Etag, Last-Modified, Accept-Ranges), 206 for a Range request, empty 400/403/404 bodies."""

from __future__ import annotations

import io
import os
import re

import pytest
from PIL import Image

from tests.sim_comfyui.helpers import png_bytes, sample

VIEWS = sample("http_view")
CASES = [k for k, v in VIEWS.items() if isinstance(v, dict) and "request" in v]


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 200, 0)).save(buf, format="WEBP")
    return buf.getvalue()


@pytest.fixture
def files(comfy_dir):
    out = comfy_dir / "output" / "capture"
    out.mkdir(parents=True)
    (out / "img_00001_.png").write_bytes(png_bytes((32, 24)))
    (comfy_dir / "temp" / "ComfyUI_temp_jbrsz_00001_.png").write_bytes(png_bytes((40, 30)))
    (comfy_dir / "input" / "capture_start.png").write_bytes(png_bytes((40, 30)))
    (out / "vhs_00001.mp4").write_bytes(os.urandom(2406))
    (out / "video_00001_.mp4").write_bytes(os.urandom(2331))
    (out / "webp_00001_.webp").write_bytes(_webp())
    return comfy_dir


@pytest.mark.parametrize("case", CASES)
async def test_view_matches_capture(emu, http, files, case):
    request, expected = VIEWS[case]["request"], VIEWS[case]["response"]
    async with http.get(
        f"{emu.url}/view", params=request.get("query", {}), headers=request.get("headers", {})
    ) as resp:
        body = await resp.read()
    want_headers = {k for k in expected["headers"] if k not in ("Date", "Server")}
    got_headers = {k for k in resp.headers if k not in ("Date", "Server")}
    assert resp.status == expected["status"]
    assert got_headers == want_headers
    if expected["status"] != 200 and expected["status"] != 206:
        assert body == b""
        return
    for key in ("Content-Type", "Content-Disposition", "Accept-Ranges"):
        if key in expected["headers"]:
            assert resp.headers[key] == expected["headers"][key], key
    if "Etag" in expected["headers"]:
        assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', resp.headers["Etag"])
    assert int(resp.headers["Content-Length"]) == len(body)
    if expected["status"] == 206:
        size = int(expected["headers"]["Content-Range"].rsplit("/", 1)[1])
        assert resp.headers["Content-Range"] == f"bytes 0-99/{size}"
        assert len(body) == 100
    elif "preview" in request.get("query", {}) or "channel" in request.get("query", {}):
        Image.open(io.BytesIO(body)).load()


async def test_view_subfolder_escape_is_403(emu, http, files):
    async with http.get(f"{emu.url}/view", params={"filename": "x.png", "subfolder": "../../etc"}) as resp:
        assert (resp.status, await resp.read()) == (403, b"")
