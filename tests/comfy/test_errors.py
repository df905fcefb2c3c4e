"""Typed errors: 400 bodies and execution errors (captured samples), and the classifiers."""

from __future__ import annotations

import json

import pytest

from app.comfy.errors import (
    ErrorKind,
    ExecutionError,
    PromptValidationError,
    classify_execution_error,
)
from app.errors import ComfyfleetError


def test_gguf_magic_invalid_is_a_corrupt_model(fixtures_dir):
    samples = json.loads(
        (fixtures_dir / "comfyui" / "samples" / "ws_execution_errors_loaders.json").read_text()
    )
    data = next(
        m["msg"]["data"]
        for m in samples["unetloadergguf_only_placeholder"]["ws_messages"]
        if m.get("msg", {}).get("type") == "execution_error"
    )
    err = ExecutionError.from_event(data)
    assert (err.node_id, err.node_type, err.exception_type) == ("1", "UnetLoaderGGUF", "ValueError")
    assert err.kind is ErrorKind.MODEL_CORRUPT and err.retryable
    assert "node 1 (UnetLoaderGGUF)" in str(err) and "GGUF magic invalid" in str(err)
    assert isinstance(err, ComfyfleetError)


def test_safetensors_header_too_large_is_a_corrupt_model():
    assert (
        classify_execution_error(
            "safetensors._safetensors_rust.SafetensorError",
            "Error while deserializing header: header too large\n",
        )
        is ErrorKind.MODEL_CORRUPT
    )


@pytest.mark.parametrize(
    "etype,message",
    [
        ("torch.OutOfMemoryError", "Allocation on device"),
        ("torch.cuda.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
        ("RuntimeError", "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
    ],
)
def test_out_of_memory_is_recoverable(etype, message):
    assert classify_execution_error(etype, message) is ErrorKind.OOM


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: an illegal memory access was encountered",
        "CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA`",
        "CUDA error: unspecified launch failure",
    ],
)
def test_illegal_memory_access_and_device_assert_replace_the_instance(message):
    assert classify_execution_error("RuntimeError", message) is ErrorKind.DEVICE_FAULT


def test_plain_node_failure_is_a_workflow_error():
    err = ExecutionError("108", "VHS_VideoCombine", "ValueError", "'gif' is not a valid VideoContainer")
    assert err.kind is ErrorKind.WORKFLOW and not err.retryable


def _validation_cases(fixtures_dir):
    data = json.loads(
        (fixtures_dir / "comfyui" / "samples" / "http_prompt_validation_errors.json").read_text()
    )
    return data


def test_required_input_missing_names_node_and_input(fixtures_dir):
    variants = json.loads((fixtures_dir / "comfyui" / "samples" / "wan22_i2v_gguf_submit.json").read_text())
    body = variants["variants"]["gguf_missing_file"]["response"]
    err = PromptValidationError(body["error"], body["node_errors"])
    [ne] = err.node_errors
    assert (ne.node_id, ne.class_type, ne.type, ne.input_name) == (
        "95",
        "UnetLoaderGGUF",
        "value_not_in_list",
        "unet_name",
    )
    assert "Wan2.2-I2V-A14B-HighNoise-Q8_0.gguf" in ne.details
    assert "node 95 (UnetLoaderGGUF)" in str(err)
    assert err.error_type == "prompt_outputs_failed_validation"


def test_every_captured_400_becomes_a_readable_error(fixtures_dir):
    cases = _validation_cases(fixtures_dir)
    items = cases.items() if isinstance(cases, dict) else enumerate(cases)
    checked = 0
    for _, case in items:
        resp = case.get("response", {}) if isinstance(case, dict) else {}
        body = resp.get("json")
        if resp.get("status") != 400 or not isinstance(body, dict):
            continue
        err = PromptValidationError(body.get("error"), body.get("node_errors"))
        assert str(err).startswith("ComfyUI rejected the prompt")
        node_ids = set((body.get("node_errors") or {}).keys())
        assert {ne.node_id for ne in err.node_errors} == node_ids
        checked += 1
    assert checked >= 15


async def test_a_transient_500_on_a_poll_is_retried_not_fatal():
    """A proxy's 52x or a momentary 500 on an idempotent GET (/history, /queue) must not fail the job."""
    import httpx

    from app.comfy.client import ComfyClient

    answers = iter(
        [httpx.Response(500, text="boom"), httpx.Response(520, text="cf"), httpx.Response(200, json={})]
    )
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return next(answers)

    async with ComfyClient("http://comfy.test") as comfy:
        await comfy._http.aclose()
        comfy._http = httpx.AsyncClient(base_url="http://comfy.test", transport=httpx.MockTransport(handler))
        assert await comfy.queue() == {}
    assert seen == ["/queue", "/queue", "/queue"]
