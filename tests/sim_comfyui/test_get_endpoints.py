"""GET endpoints against http_get_endpoints.json: status, Content-Type, JSON shape, exact values where
the emulator's install matches the capture's (model lists, object_info of one class)."""

from __future__ import annotations

import pytest

from tests.sim_comfyui.helpers import sample, type_tree

GETS = sample("http_get_endpoints")
EXACT = [
    "/queue",
    "/prompt",
    "/features",
    "/embeddings",
    "/models",
    "/models/diffusion_models",
    "/models/unet_gguf",
    "/models/loras",
    "/models/vae",
    "/models/text_encoders",
    "/object_info/KSamplerAdvanced",
    "/object_info/NoSuchNode",
    "/history?max_items=2",
    "/settings",
    "/users",
]
EMPTY_404 = ["/models/unet", "/models/clip", "/models/nonexistent_folder"]


async def _get(http, url, path):
    async with http.get(url + path) as resp:
        body = await resp.read()
        return resp, body


@pytest.mark.parametrize("path", EXACT)
async def test_get_matches_capture_exactly(emu, http, path):
    expected = GETS[path]["response"]
    resp, _ = await _get(http, emu.url, path)
    assert resp.status == expected["status"]
    assert resp.headers["Content-Type"] == expected["headers"]["Content-Type"]
    assert await resp.json() == expected["json"]


@pytest.mark.parametrize("path", EMPTY_404)
async def test_model_folder_not_a_key_is_404_with_empty_body(emu, http, path):
    resp, body = await _get(http, emu.url, path)
    assert (resp.status, body) == (404, b"")
    assert GETS[path]["response"]["status"] == 404
    assert "Content-Type" not in GETS[path]["response"]["headers"]


@pytest.mark.parametrize("path", ["/system_stats", "/api/system_stats"])
async def test_system_stats_has_the_real_shape_and_a_simulated_device(emu, http, path):
    expected = GETS[path]["response"]["json"]
    resp, _ = await _get(http, emu.url, path)
    got = await resp.json()
    assert resp.status == 200
    assert type_tree(got["system"]).keys() == type_tree(expected["system"]).keys()
    for key in ("os", "comfyui_version", "required_frontend_version", "embedded_python"):
        assert type(got["system"][key]) is type(expected["system"][key])
    assert got["system"]["comfyui_version"] == "0.3.64"
    assert set(got["devices"][0]) == set(expected["devices"][0])
    assert "simulated" in got["devices"][0]["name"]


async def test_userdata_missing_dir_is_404_text(emu, http):
    expected = GETS["/userdata?dir=workflows"]["response"]
    resp, body = await _get(http, emu.url, "/userdata?dir=workflows")
    assert resp.status == expected["status"] == 404
    assert resp.headers["Content-Type"] == expected["headers"]["Content-Type"]
    assert body == b"Directory not found"


async def test_every_route_answers_under_api_prefix(emu, http):
    for path in ("/queue", "/features", "/models/vae", "/object_info/LoadImage", "/history"):
        plain, _ = await _get(http, emu.url, path)
        prefixed, _ = await _get(http, emu.url, "/api" + path)
        assert prefixed.status == plain.status == 200
        assert await prefixed.json() == await plain.json()


async def test_object_info_lists_only_installed_classes(emu, http):
    resp, _ = await _get(http, emu.url, "/object_info")
    info = await resp.json()
    assert {"UnetLoaderGGUF", "VHS_VideoCombine", "SaveImageWebsocket", "KSamplerAdvanced"} <= set(info)
    assert info["UNETLoader"]["input"]["required"]["unet_name"][0] == []  # .gguf is not a core extension
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["example.png"]
