"""The emulator's own widget-type conversion (used when the validator hands back no converted prompt)."""

from __future__ import annotations

from app.sim.comfyui.typed import convert_prompt
from tests.sim_comfyui.helpers import object_info, sample


def test_history_prompt_values_take_declared_types():
    job = sample("ws_and_history_jobs")["vhs_videocombine_job"]
    posted = job["post_prompt"]["request"]["json"]["prompt"]
    stored = next(iter(job["history"]["response"]["json"].values()))["prompt"][2]
    assert convert_prompt(posted, object_info()) == stored


def test_numeric_strings_convert_and_links_stay_links():
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": "64", "height": 64.7, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": 5}},
    }
    out = convert_prompt(prompt, object_info())
    assert out["1"]["inputs"]["width"] == 64 and out["1"]["inputs"]["height"] == 64
    assert out["2"]["inputs"] == {"images": ["1", 0], "filename_prefix": "5"}
    assert prompt["1"]["inputs"]["width"] == "64"  # the caller's prompt is untouched
