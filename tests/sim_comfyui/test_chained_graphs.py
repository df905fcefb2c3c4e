"""A long S2V chain (issue 11) is signed in linear time: one digest per node, built from its inputs'
digests (nested signatures doubled per Extend block and once took 63 s for one submit)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from app.config import Settings
from app.sim.comfyui.executor import Executor
from app.workflows import get_workflow


def test_s2v_chain_signatures_are_per_node_digests(tmp_path):
    wf = get_workflow("wan22_s2v", Settings())
    params = wf.validate({"prompt": "sing", "seed": 1}, (640, 640))
    graph = wf.render(params, "ref.png", "p", audio_name="a.mp3", audio_seconds=60.0)
    assert sum(n["class_type"] == "WanSoundImageToVideoExtend" for n in graph.values()) == 12
    emu = SimpleNamespace(install=SimpleNamespace(comfy_dir=tmp_path))
    executor = Executor.__new__(Executor)
    executor.emu = emu
    t0 = time.perf_counter()
    sigs = executor._signatures(graph)
    assert time.perf_counter() - t0 < 1.0
    assert set(sigs) == set(graph) and all(len(s) == 64 for s in sigs.values())
    assert len(set(sigs.values())) == len(graph)  # every node distinct (copies differ by their inputs)
    # a change far upstream reaches the output's signature
    graph["6"]["inputs"]["text"] = "hum"
    assert executor._signatures(graph)["113"] != sigs["113"]
