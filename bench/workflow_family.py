"""Benchmark: planning, rendering and schema-validating every Wan 2.2 family workflow (issue 11), and the
S2V chain as the audio grows (the graph grows by one Extend block per 5 s of audio).

For each workflow: plan_request + render + validate_prompt against the captured ComfyUI 0.3.64 node
schemas (audio nodes included), p50/max over --runs runs. For S2V: nodes and time at 5..60 s of audio,
so a quadratic step would show as a superlinear column (a chained graph once took 63 s to sign).

    python bench/workflow_family.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from app.comfy.graph_check import validate_prompt
from app.config import Settings
from app.workflows import get_workflow, load_workflows
from app.workflows.plan import plan_request

ROOT = Path(__file__).resolve().parent.parent
UPLOADS = {"image": "start.png", "end_image": "end.png", "audio": "voice.mp3"}


def object_info() -> dict:
    info = json.loads((ROOT / "tests/fixtures/comfyui/object_info_full_with_audio.json").read_text())
    info["LoadImage"]["input"]["required"]["image"][0].extend([UPLOADS["image"], UPLOADS["end_image"]])
    info["LoadAudio"]["input"]["required"]["audio"][0].append(UPLOADS["audio"])
    return info


def once(name: str, info: dict, audio_seconds: float | None) -> tuple[float, int]:
    settings = Settings()

    def lookup(n: str):
        return get_workflow(n, settings)

    t0 = time.perf_counter()
    wf = lookup(name)
    given = {n: n for n in wf.inputs.taken if wf.inputs.spec(n).required}
    plan = plan_request(
        lookup,
        name,
        {"prompt": "a fox runs", "camera_motion": "static"},
        given=given,
        image_size=(640, 480),
        audio_seconds=audio_seconds if "audio" in given else None,
    )
    names = {f"{n}_name": UPLOADS[n] for n in given if n != "image"}
    graph = plan.workflow.render(
        plan.params.with_resolved_seed(),
        UPLOADS["image"] if "image" in given else None,
        "bench",
        audio_seconds=plan.audio_seconds,
        camera_pose=plan.camera_pose,
        **names,
    )
    check = validate_prompt(graph, info)
    assert check.ok, check.node_errors
    return time.perf_counter() - t0, len(graph)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    info = object_info()
    print(f"{'workflow':28} {'nodes':>5} {'p50 ms':>8} {'max ms':>8}")
    for name in sorted(load_workflows(Settings())):
        times, nodes = [], 0
        for _ in range(args.runs):
            dt, nodes = once(name, info, 7.0)
            times.append(dt * 1000)
        print(f"{name:28} {nodes:5d} {statistics.median(times):8.2f} {max(times):8.2f}")
    print()
    print(f"{'S2V audio s':>11} {'chunks':>6} {'nodes':>5} {'p50 ms':>8}")
    for seconds in (5, 10, 20, 30, 45, 60):
        times = []
        for _ in range(max(5, args.runs // 5)):
            dt, nodes = once("wan22_s2v", info, float(seconds))
            times.append(dt * 1000)
        chunks = -(-(16 * seconds + 3) // 80)
        print(f"{seconds:11d} {chunks:6d} {nodes:5d} {statistics.median(times):8.2f}")


if __name__ == "__main__":
    main()
