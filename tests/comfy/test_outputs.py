"""Output discovery across the shapes real nodes report (captured history samples)."""

from __future__ import annotations

import json

import pytest

from app.comfy.outputs import PromptResult, execution_seconds, find_outputs


@pytest.fixture(scope="module")
def jobs(fixtures_dir):
    return json.loads((fixtures_dir / "comfyui" / "samples" / "ws_and_history_jobs.json").read_text())


def _entry(job):
    history = job["history"]["response"]["json"]
    return history[job["prompt_id"]]


def test_vhs_video_reported_under_gifs_with_subfolder(jobs):
    outs = find_outputs(_entry(jobs["vhs_videocombine_job"])["outputs"])
    assert [(o.filename, o.subfolder, o.type, o.key) for o in outs] == [
        ("vhs_00001.mp4", "capture", "output", "gifs")
    ]
    assert outs[0].is_video and outs[0].view_params() == {
        "filename": "vhs_00001.mp4",
        "subfolder": "capture",
        "type": "output",
    }


def test_savevideo_reported_under_images_is_still_a_video(jobs):
    outs = find_outputs(_entry(jobs["createvideo_savevideo_webp_job"])["outputs"])
    result = PromptResult("p", outs)
    assert result.video().filename == "video_00001_.mp4"
    assert {o.filename for o in outs} == {"video_00001_.mp4", "webp_00001_.webp"}


def test_temp_previews_are_not_results(jobs):
    outs = find_outputs(_entry(jobs["saveimage_job"])["outputs"])
    assert [o.filename for o in outs] == ["img_00001_.png"]


def test_temp_outputs_used_when_nothing_else(jobs):
    outs = find_outputs(_entry(jobs["vhs_videocombine_save_output_false"])["outputs"])
    assert outs and all(o.type == "temp" for o in outs)


def test_videos_and_files_keys_are_found():
    outs = find_outputs(
        {
            "5": {
                "videos": [{"filename": "a.webm", "subfolder": "", "type": "output"}],
                "files": [{"filename": "b.bin", "subfolder": "x", "type": "output"}],
                "text": ["ignored"],
            }
        }
    )
    assert [(o.filename, o.key) for o in outs] == [("a.webm", "videos"), ("b.bin", "files")]


def test_websocket_only_outputs_give_no_files(jobs):
    assert find_outputs(_entry(jobs["saveimagewebsocket_job_legacy_client"])["outputs"]) == []


def test_execution_seconds_from_history_timestamps(jobs):
    status = _entry(jobs["vhs_videocombine_job"])["status"]
    assert execution_seconds(status) == pytest.approx(0.026)
    assert execution_seconds({"messages": []}) is None
