"""POST /prompt validation against http_prompt_validation_errors.json: same status, same 400 bodies
(through the shared graph_check validator fed with the emulator's installed nodes and files), and
`number` going up on every POST, rejected ones included."""

from __future__ import annotations

import json

from tests.sim_comfyui.helpers import sample

CASES = sample("http_prompt_validation_errors")


def _strip_tracebacks(value):
    if isinstance(value, dict):
        return {k: _strip_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [_strip_tracebacks(v) for v in value]
    return value


async def test_validation_cases_match_capture(emu, http):
    first_number = None
    for index, (name, case) in enumerate(CASES.items()):
        request, expected = case["request"], case["response"]
        if "raw_body" in request:
            kwargs = {"data": request["raw_body"], "headers": request["headers"]}
        else:
            kwargs = {"json": request["json"]}
        async with http.post(f"{emu.url}/prompt", **kwargs) as resp:
            body = await resp.read()
            assert resp.status == expected["status"], name
            assert resp.headers["Content-Type"] == expected["headers"]["Content-Type"], name
        if expected["status"] == 500:
            assert body.decode() == "500 Internal Server Error\n\nServer got itself in trouble", name
            continue
        got = json.loads(body)
        want = expected["json"]
        if expected["status"] == 200:
            assert set(got) == {"prompt_id", "number", "node_errors"}, name
            assert _strip_tracebacks(got["node_errors"]) == _strip_tracebacks(want["node_errors"]), name
            first_number = want["number"] - index if first_number is None else first_number
            assert got["number"] == want["number"] - first_number, name
        else:
            assert _strip_tracebacks(got) == _strip_tracebacks(want), name


async def test_rejected_prompt_still_consumes_a_number(emu, http):
    good = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    async with http.post(
        f"{emu.url}/prompt", json={"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}
    ) as r:
        assert r.status == 400
    async with http.post(f"{emu.url}/prompt", json={"prompt": good}) as r:
        assert (await r.json())["number"] == 1
    async with http.post(f"{emu.url}/prompt", json={"prompt": good, "front": True}) as r:
        assert (await r.json())["number"] == -2


async def test_missing_custom_node_dir_means_class_does_not_exist(make_emu, http, comfy_dir):
    (comfy_dir / "custom_nodes" / "ComfyUI-GGUF" / "__init__.py").unlink()
    (comfy_dir / "custom_nodes" / "ComfyUI-GGUF").rmdir()
    emu = await make_emu()
    graph = {"1": {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": "x.gguf"}}}
    async with http.post(f"{emu.url}/prompt", json={"prompt": graph}) as r:
        body = await r.json()
    assert r.status == 400
    assert body["error"]["message"] == "Cannot execute because node UnetLoaderGGUF does not exist."
    async with http.get(f"{emu.url}/models/unet_gguf") as r:
        assert r.status == 404


async def test_restart_picks_up_a_newly_installed_custom_node(make_emu, http, comfy_dir):
    (comfy_dir / "custom_nodes" / "ComfyUI-GGUF" / "__init__.py").unlink()
    (comfy_dir / "custom_nodes" / "ComfyUI-GGUF").rmdir()
    emu = await make_emu()
    async with http.get(f"{emu.url}/object_info/UnetLoaderGGUF") as r:
        assert await r.json() == {}
    (comfy_dir / "custom_nodes" / "ComfyUI-GGUF").mkdir()
    async with http.get(f"{emu.url}/object_info/UnetLoaderGGUF") as r:
        assert await r.json() == {}  # custom nodes load at boot only
    async with http.post(f"{emu.url}/__sim/restart") as r:
        assert r.status == 200
    async with http.get(f"{emu.url}/object_info/UnetLoaderGGUF") as r:
        info = await r.json()
    assert info["UnetLoaderGGUF"]["python_module"] == "custom_nodes.ComfyUI-GGUF"


async def test_partial_download_is_not_a_valid_model(emu, http, comfy_dir):
    (comfy_dir / "models" / "vae" / "wan_2.1_vae.safetensors").rename(
        comfy_dir / "models" / "vae" / "wan_2.1_vae.safetensors.part"
    )
    graph = {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 0]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    async with http.post(f"{emu.url}/prompt", json={"prompt": graph}) as r:
        body = await r.json()
    assert r.status == 400
    assert body["node_errors"]["1"]["errors"][0]["details"] == (
        "vae_name: 'wan_2.1_vae.safetensors' not in ['pixel_space']"
    )


async def test_gguf_in_diffusion_models_is_listed_too(emu, http, comfy_dir):
    (comfy_dir / "models" / "diffusion_models").mkdir()
    (comfy_dir / "models" / "diffusion_models" / "extra.gguf").write_bytes(b"GGUF")
    async with http.get(f"{emu.url}/object_info/UnetLoaderGGUF") as r:
        names = (await r.json())["UnetLoaderGGUF"]["input"]["required"]["unet_name"][0]
    assert names == [
        "Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf",
        "Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf",
        "extra.gguf",
    ]
