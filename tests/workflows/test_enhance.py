"""enhance_prompt (issue 11): local rules restructure the prompt; an OpenAI-compatible endpoint is used
when configured, with a timeout and a fallback to the local rules; the plan reports the prompt that ran."""

from __future__ import annotations

import json

import httpx
import pytest

from app.config import Settings
from app.workflows import get_workflow
from app.workflows.enhance import DEFAULT_STYLE, enhance, enhance_locally
from app.workflows.plan import enhancement_inputs, plan_request


def lookup(name: str):
    return get_workflow(name, Settings())


def test_local_rules_order_subject_scene_motion_camera_aesthetic_style():
    out = enhance_locally(
        "a red fox. trots forward. in a snowy forest at dawn",
        camera_phrase="the camera pans left",
        aesthetic=["cinematic lighting", "sharp focus"],
    )
    assert out == (
        "A red fox. In a snowy forest at dawn. Trots forward. The camera pans left. "
        f"Cinematic lighting, sharp focus. {DEFAULT_STYLE[0].upper()}{DEFAULT_STYLE[1:]}."
    )


def test_local_rules_are_deterministic_and_bounded():
    long = "a fox " * 600
    assert enhance_locally(long) == enhance_locally(long)
    assert len(enhance_locally(long, max_length=300)) <= 300


async def test_remote_endpoint_is_used_with_the_key_as_bearer():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers.get("authorization")
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json={"choices": [{"message": {"content": "  A fox, rewritten.  "}}]})

    out = await enhance(
        "a fox",
        camera_phrase="static camera",
        url="http://enhancer/v1/chat/completions",
        key="sk-test",
        transport=httpx.MockTransport(handler),
    )
    assert (out.prompt, out.by) == ("A fox, rewritten.", "remote")
    assert seen["auth"] == "Bearer sk-test"
    assert "static camera" in seen["body"]["messages"][1]["content"]


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(500, text="down"),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json={"choices": [{"message": {"content": "   "}}]}),
        httpx.Response(200, json={"choices": [{"message": {"content": "x" * 5000}}]}),
    ],
)
async def test_remote_failure_falls_back_to_local_rules(reply):
    out = await enhance(
        "a fox. in the snow",
        url="http://enhancer/v1",
        key="sk-secret-value",
        transport=httpx.MockTransport(lambda _r: reply),
    )
    assert out.prompt == enhance_locally("a fox. in the snow")
    assert out.by.startswith("local (fallback:") and "sk-secret-value" not in out.by


async def test_remote_timeout_falls_back():
    def slow(_request):
        raise httpx.ReadTimeout("timed out")

    out = await enhance("a fox", url="http://enhancer/v1", transport=httpx.MockTransport(slow), timeout_s=0.1)
    assert out.by.startswith("local (fallback: ReadTimeout")


async def test_plan_reports_the_enhanced_prompt_with_camera_and_preset_terms():
    raw = {"prompt": "a fox", "camera_motion": "orbit_left", "quality_preset": "high", "enhance_prompt": True}
    wf = "wan22_t2v_lightx2v_gguf"
    first = plan_request(lookup, wf, raw)
    phrase, aesthetic = enhancement_inputs(first)
    assert phrase and "cinematic lighting" in aesthetic
    result = await enhance("a fox", camera_phrase=phrase, aesthetic=aesthetic)
    final = plan_request(lookup, wf, raw, enhanced_prompt=result.prompt, enhanced_by=result.by)
    assert final.params.prompt == result.prompt
    assert "circles around the subject to the left" in final.params.prompt
    assert "Cinematic lighting" in final.params.prompt
    assert final.applied["enhance_prompt"] == {"from": "a fox", "by": "local"}
