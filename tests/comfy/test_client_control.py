"""Cancel (pending / running / caller-side), the 400 cases, capability checks and proxy auth."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.comfy import (
    ComfyAuthError,
    MissingModelError,
    MissingNodeError,
    PromptInterrupted,
    PromptValidationError,
)
from tests.comfy.conftest import make_client
from tests.comfy.world import SAMPLERS, VIDEO_NODE, WAN_MODELS, wan_graph


class _Node:
    def __init__(self, name, node_types):
        self.name, self.node_types = name, node_types


async def _wait_until(predicate, within=5.0):
    end = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def test_cancel_pending_prompt_leaves_running_one_alone(emulator, start_image):
    emu = await emulator(step_delay_s=0.05)
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        ids: dict[str, str] = {}
        first = asyncio.create_task(
            comfy.run(
                wan_graph(name),
                deadline=time.monotonic() + 20,
                on_submitted=lambda pid: ids.setdefault("a", pid),
            )
        )
        await _wait_until(lambda: emu.running is not None)
        second = asyncio.create_task(
            comfy.run(
                wan_graph(name),
                deadline=time.monotonic() + 20,
                on_submitted=lambda pid: ids.setdefault("b", pid),
            )
        )
        await _wait_until(lambda: "b" in ids)
        assert await comfy.cancel(ids["b"]) == "removed"
        with pytest.raises(PromptInterrupted):
            await second
        result = await first  # the running prompt was not interrupted
    assert result.video(VIDEO_NODE) is not None


async def test_cancel_running_prompt_interrupts_it(emulator, start_image):
    emu = await emulator(step_delay_s=0.2)
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        ids: list[str] = []
        task = asyncio.create_task(
            comfy.run(
                wan_graph(name),
                deadline=time.monotonic() + 20,
                progress_nodes=SAMPLERS,
                on_submitted=ids.append,
            )
        )
        await _wait_until(lambda: emu.running is not None and ids)
        assert await comfy.cancel(ids[0]) == "interrupted"
        with pytest.raises(PromptInterrupted):
            await task
        history = await comfy.history(ids[0])
    assert history["status"]["status_str"] == "error"


async def test_caller_cancelling_run_stops_the_prompt(emulator, start_image):
    emu = await emulator(step_delay_s=0.2)
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        task = asyncio.create_task(comfy.run(wan_graph(name), deadline=time.monotonic() + 20))
        await _wait_until(lambda: emu.running is not None)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _wait_until(lambda: emu.running is None and not emu.pending)


async def test_shutdown_cancelling_run_leaves_the_prompt_running_for_reattach(emulator, start_image):
    emu = await emulator(step_delay_s=0.1)
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        submitted: list[str] = []
        task = asyncio.create_task(
            comfy.run(
                wan_graph(name),
                deadline=time.monotonic() + 20,
                on_submitted=submitted.append,
                keep_running_on_cancel=lambda: True,
            )
        )
        await _wait_until(lambda: emu.running is not None)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _wait_until(lambda: emu.running is None and not emu.pending)
        history = (await comfy.history(submitted[0])) or {}
        assert history["status"]["status_str"] == "success"  # finished on the GPU, not interrupted


async def test_model_not_in_combo_list_is_rejected_with_node_details(emulator, start_image):
    emu = await emulator()
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        graph = wan_graph(name)
        graph["95"]["inputs"]["unet_name"] = "Wan2.2-I2V-A14B-HighNoise-Q8_0.gguf"
        with pytest.raises(PromptValidationError) as exc:
            await comfy.run(graph, deadline=time.monotonic() + 10)
    [ne] = exc.value.node_errors
    assert (ne.node_id, ne.class_type, ne.type, ne.input_name) == (
        "95",
        "UnetLoaderGGUF",
        "value_not_in_list",
        "unet_name",
    )
    assert not exc.value.retryable


async def test_unknown_node_type_is_rejected(emulator, start_image):
    emu = await emulator()
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        graph = wan_graph(name)
        graph["87"]["class_type"] = "NoSuchNodeXYZ"
        with pytest.raises(PromptValidationError) as exc:
            await comfy.run(graph, deadline=time.monotonic() + 10)
    assert exc.value.error_type == "invalid_prompt" and "NoSuchNodeXYZ" in str(exc.value)


async def test_start_image_not_uploaded_is_rejected(emulator):
    emu = await emulator()
    async with make_client(emu.url) as comfy:
        with pytest.raises(PromptValidationError) as exc:
            await comfy.run(wan_graph("never_uploaded.png"), deadline=time.monotonic() + 10)
    assert [(e.node_id, e.type) for e in exc.value.node_errors] == [("97", "custom_validation_failed")]


async def test_out_of_range_value_is_rejected(emulator, start_image):
    emu = await emulator()
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        graph = wan_graph(name)
        graph["98"]["inputs"]["width"] = 999999
        with pytest.raises(PromptValidationError) as exc:
            await comfy.run(graph, deadline=time.monotonic() + 10)
    assert exc.value.node_errors[0].type == "value_bigger_than_max"


async def test_missing_custom_node_is_named_before_submit(emulator, comfy_dir):
    (comfy_dir / "custom_nodes" / "comfyui-videohelpersuite" / "__init__.py").unlink()
    (comfy_dir / "custom_nodes" / "comfyui-videohelpersuite").rmdir()
    emu = await emulator()
    graph = wan_graph("start.png")
    async with make_client(emu.url) as comfy:
        with pytest.raises(MissingNodeError) as exc:
            await comfy.check_capabilities(
                {n["class_type"] for n in graph.values()},
                [(n, f) for f, n in WAN_MODELS],
                custom_nodes=[_Node("ComfyUI-VideoHelperSuite", ["VHS_VideoCombine"])],
            )
    assert exc.value.node_types == ["VHS_VideoCombine"]
    assert "ComfyUI-VideoHelperSuite" in str(exc.value)


async def test_missing_model_file_is_named_before_submit(emulator, comfy_dir):
    folder, name = WAN_MODELS[3]
    (comfy_dir / "models" / folder / name).rename(comfy_dir / "models" / folder / (name + ".part"))
    emu = await emulator()
    graph = wan_graph("start.png")
    async with make_client(emu.url) as comfy:
        with pytest.raises(MissingModelError) as exc:
            await comfy.check_capabilities(
                {n["class_type"] for n in graph.values()}, [(n, f) for f, n in WAN_MODELS]
            )
    assert exc.value.missing == [("vae", "wan_2.1_vae.safetensors")]


async def test_capabilities_pass_on_a_provisioned_instance(emulator):
    emu = await emulator()
    graph = wan_graph("start.png")
    async with make_client(emu.url) as comfy:
        info = await comfy.check_capabilities(
            {n["class_type"] for n in graph.values()}, [(n, f) for f, n in WAN_MODELS]
        )
    assert "UnetLoaderGGUF" in info


async def test_proxy_rejects_missing_token(emulator):
    emu = await emulator(token="s3cret-proxy-token")
    async with make_client(emu.url) as comfy:
        with pytest.raises(ComfyAuthError) as exc:
            await comfy.wait_ready(time.monotonic() + 2)
    assert "s3cret-proxy-token" not in str(exc.value) and not exc.value.retryable


@pytest.mark.parametrize("auth", ["bearer", "basic"])
async def test_token_used_on_http_and_websocket(emulator, start_image, auth):
    token = "s3cret-proxy-token"
    emu = await emulator(token=token, step_delay_s=0.01)
    opts = {"token": token} if auth == "bearer" else {"basic_auth": ("vast", token)}
    seen = []
    async with make_client(emu.url, **opts) as comfy:
        await comfy.wait_ready(time.monotonic() + 2)
        name = await comfy.upload_image(start_image)
        result = await comfy.run(
            wan_graph(name), deadline=time.monotonic() + 20, progress_nodes=SAMPLERS, on_progress=seen.append
        )
    assert result.video(VIDEO_NODE) is not None
    assert any(p.stage.startswith("sampling") for p in seen)  # events arrived over the authenticated socket


async def test_cancel_of_a_finished_prompt_is_not_found(emulator, start_image):
    emu = await emulator()
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        result = await comfy.run(wan_graph(name), deadline=time.monotonic() + 20)
        assert await comfy.cancel(result.prompt_id) == "not_found"


async def test_partially_invalid_graph_is_not_run_with_missing_outputs(emulator, start_image):
    """ComfyUI queues the valid branch and answers 200 + node_errors; we refuse a partial result."""
    emu = await emulator(step_delay_s=0.05)
    async with make_client(emu.url) as comfy:
        name = await comfy.upload_image(start_image)
        graph = wan_graph(name)
        graph["200"] = {"class_type": "SaveImage", "inputs": {"images": ["87", 0]}}  # filename_prefix missing
        with pytest.raises(PromptValidationError) as exc:
            await comfy.run(graph, deadline=time.monotonic() + 20)
        assert [(e.node_id, e.type) for e in exc.value.node_errors] == [("200", "required_input_missing")]
        await _wait_until(lambda: emu.running is None and not emu.pending)
