"""POST /upload/image against http_upload_image.json, case by case in the capture's order."""

from __future__ import annotations

from tests.sim_comfyui.helpers import png_bytes, sample, upload

CASES = sample("http_upload_image")
RED = png_bytes(color=(255, 0, 0))
OTHER_RED = png_bytes(size=(33, 24), color=(250, 0, 0))


def _expected(index):
    return CASES[index]["response"]


async def _check(resp, http_expected):
    assert resp.status == http_expected["status"]
    if http_expected["status"] == 200:
        assert resp.headers["Content-Type"] == http_expected["headers"]["Content-Type"]
        assert await resp.json() == http_expected["json"]
    else:
        assert resp.headers.get("Content-Length") == "0"
        assert "Content-Type" not in http_expected["headers"]


async def test_upload_sequence_matches_capture(emu, http, comfy_dir):
    url = emu.url
    await _check(
        await upload(http, url, "capture_red.png", RED, overwrite="true", type="input", subfolder=""),
        _expected(0),
    )
    mtime = (comfy_dir / "input" / "capture_red.png").stat().st_mtime_ns
    # identical content, no overwrite: same name, nothing written
    await _check(
        await upload(http, url, "capture_red.png", RED, overwrite="false", type="input", subfolder=""),
        _expected(1),
    )
    assert (comfy_dir / "input" / "capture_red.png").stat().st_mtime_ns == mtime
    # different content, no overwrite field: renamed
    await _check(await upload(http, url, "capture_red.png", OTHER_RED, type="input"), _expected(2))
    assert (comfy_dir / "input" / "capture_red (1).png").read_bytes() == OTHER_RED
    await _check(
        await upload(
            http, url, "capture_red.png", RED, overwrite="true", type="input", subfolder="capture_sub"
        ),
        _expected(3),
    )
    assert (comfy_dir / "input" / "capture_sub" / "capture_red.png").is_file()
    await _check(
        await upload(http, url, "capture_temp.png", RED, overwrite="true", type="temp"), _expected(4)
    )
    assert (comfy_dir / "temp" / "capture_temp.png").is_file()
    await _check(await upload(http, url, "capture_noty.png", RED, overwrite="true"), _expected(5))
    await _check(
        await upload(http, url, "capture_evil.png", RED, overwrite="true", type="input", subfolder="../evil"),
        _expected(6),
    )
    assert not (comfy_dir / "evil").exists()
    await _check(await upload(http, url, None, None, overwrite="true"), _expected(7))
    await _check(
        await upload(http, url, "capture_start.png", png_bytes((40, 30)), overwrite="true"), _expected(8)
    )
    # subfolder files stay out of the LoadImage combo; top-level uploads appear, sorted
    async with http.get(f"{url}/object_info/LoadImage") as resp:
        assert await resp.json() == _expected(9)["json"]


async def test_upload_overwrite_replaces_content(emu, http, comfy_dir):
    await upload(http, emu.url, "a.png", RED, overwrite="true")
    resp = await upload(http, emu.url, "a.png", OTHER_RED, overwrite="1")
    assert resp.status == 200
    assert (comfy_dir / "input" / "a.png").read_bytes() == OTHER_RED


async def test_upload_dedup_finds_identical_renamed_copy(emu, http):
    await upload(http, emu.url, "b.png", RED, overwrite="true")
    await upload(http, emu.url, "b.png", OTHER_RED)
    resp = await upload(http, emu.url, "b.png", OTHER_RED)
    assert (await resp.json())["name"] == "b (1).png"
