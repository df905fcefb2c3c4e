"""Progress math: one monotonic 0..1 fraction over both Wan sampler passes."""

from __future__ import annotations

import json

from app.comfy.progress import ProgressTracker, sampler_shares

PID = "p-1"


def _wan_graph(fixtures_dir):
    return json.loads((fixtures_dir / "comfyui" / "wan22_i2v_gguf_api.json").read_text())


def _tick(node, value, maximum):
    return "progress", {"value": value, "max": maximum, "prompt_id": PID, "node": node}


def _executing(node):
    return "executing", {"node": node, "display_node": node, "prompt_id": PID}


def _feed_all(tracker, messages):
    seen = []
    for msg_type, data in messages:
        p = tracker.feed(msg_type, data)
        if p is not None:
            seen.append(p)
    return seen


def test_sampler_shares_follow_step_split(fixtures_dir):
    graph = _wan_graph(fixtures_dir)
    graph["86"]["inputs"].update(steps=8, start_at_step=0, end_at_step=6)
    graph["85"]["inputs"].update(steps=8, start_at_step=6, end_at_step=8)
    shares = sampler_shares(graph, ["86", "85"])
    assert shares == {"86": 0.75, "85": 0.25}


def test_sampler_shares_equal_when_steps_are_links():
    graph = {"a": {"inputs": {"steps": ["9", 0]}}, "b": {"inputs": {}}}
    assert sampler_shares(graph, ["a", "b"]) == {"a": 0.5, "b": 0.5}


def test_two_sampler_passes_sum_into_one_monotonic_fraction(fixtures_dir):
    tracker = ProgressTracker(PID, _wan_graph(fixtures_dir), ["86", "85"])
    messages = [
        ("execution_start", {"prompt_id": PID}),
        ("execution_cached", {"nodes": [], "prompt_id": PID}),
        _executing("95"),
        _executing("86"),
        _tick("86", 1, 2),
        _tick("86", 2, 2),
        _executing("85"),
        _tick("85", 1, 2),
        _tick("85", 2, 2),
        _executing("87"),
        _executing("108"),
        _tick("108", 40, 81),  # VHS ticks per frame: not a sampler, must not move the fraction back
    ]
    seen = _feed_all(tracker, messages)
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions)
    by_stage = {p.stage: p.fraction for p in seen}
    assert by_stage["loading"] == 0.0
    assert [p.fraction for p in seen if p.stage == "sampling 1/2"][-1] == 0.5
    assert any(p.stage == "sampling 2/2" and p.fraction == 0.75 for p in seen)
    assert seen[-1].stage == "decoding" and seen[-1].fraction < 1.0
    final = tracker.finish()
    assert final.fraction == 1.0 and final.stage == "done"


def test_progress_state_without_progress_messages_still_advances(fixtures_dir):
    tracker = ProgressTracker(PID, _wan_graph(fixtures_dir), ["86", "85"])
    p = tracker.feed(
        "progress_state", {"prompt_id": PID, "nodes": {"86": {"value": 1.0, "max": 2.0, "state": "running"}}}
    )
    assert p.fraction == 0.25
    p = tracker.feed(
        "progress_state",
        {
            "prompt_id": PID,
            "nodes": {
                "86": {"value": 2.0, "max": 2.0, "state": "finished"},
                "85": {"value": 0, "max": 2, "state": "running"},
            },
        },
    )
    assert p.fraction == 0.5


def test_cached_sampler_counts_as_done(fixtures_dir):
    tracker = ProgressTracker(PID, _wan_graph(fixtures_dir), ["86", "85"])
    p = tracker.feed("execution_cached", {"nodes": ["86", "95"], "prompt_id": PID})
    assert p.fraction == 0.5


def test_messages_of_another_prompt_are_ignored(fixtures_dir):
    tracker = ProgressTracker(PID, _wan_graph(fixtures_dir), ["86", "85"])
    assert tracker.feed("progress", {"value": 2, "max": 2, "prompt_id": "other", "node": "86"}) is None
    assert tracker.fraction == 0.0


def test_fully_cached_replay_without_executing(fixtures_dir):
    """A re-run replays `executed` without `executing`; node-count fallback still reaches the end."""
    jobs = json.loads((fixtures_dir / "comfyui" / "samples" / "ws_and_history_jobs.json").read_text())
    job = jobs["saveimage_job_rerun_cached"]
    graph = job["post_prompt"]["request"]["json"]["prompt"]
    tracker = ProgressTracker(job["prompt_id"], graph, None)
    seen = _feed_all(tracker, [(m["msg"]["type"], m["msg"]["data"]) for m in job["ws_messages"]])
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 0.999  # everything cached; 1.0 only once success is confirmed
    assert tracker.finish().fraction == 1.0


def test_real_vhs_capture_is_monotonic(fixtures_dir):
    jobs = json.loads((fixtures_dir / "comfyui" / "samples" / "ws_and_history_jobs.json").read_text())
    job = jobs["vhs_videocombine_job"]
    graph = job["post_prompt"]["request"]["json"]["prompt"]
    tracker = ProgressTracker(job["prompt_id"], graph, None)
    seen = _feed_all(
        tracker, [(m["msg"]["type"], m["msg"]["data"]) for m in job["ws_messages"] if "msg" in m]
    )
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] > 0.9
