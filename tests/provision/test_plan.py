"""build_plan: exact sizes and hashes from the source, mirror rewriting, the lock file."""

from __future__ import annotations

import json

import pytest

from app.config import get_settings
from app.provision import UpstreamChanged, build_plan


async def test_plan_takes_exact_size_and_sha_from_hf_head(workflow, model_server):
    plan = await build_plan(workflow, get_settings())
    for m in plan.models:
        served = model_server.file(m.name)
        assert (m.size, m.size_exact, m.sha256) == (served.size, True, served.sha256)
        assert m.url == model_server.hf_url(m.name)
    # The HEADs did not follow the CDN redirect.
    assert all(r.method == "HEAD" and "/resolve/" in r.path for r in model_server.log)
    lock = json.loads(plan.lock_path.read_text())
    assert lock["files"]["unet/high.gguf"]["sha256"] == model_server.file("high.gguf").sha256


async def test_mirror_rewrites_every_model_url(workflow, model_server):
    plan = await build_plan(workflow, get_settings(), mirror_url="http://mirror.invalid:9/m/", resolve=False)
    assert [m.url for m in plan.models] == [
        f"http://mirror.invalid:9/m/{m.folder}/{m.name}" for m in plan.models
    ]
    # Unresolvable sources fall back to the manifest's approximate size.
    assert all(not m.size_exact and m.size == model_server.file(m.name).size + 1000 for m in plan.models)
    text = plan.to_text()
    assert text.count("\nmodel\t") == len(plan.models)
    assert "~" in text


async def test_upstream_file_changed_since_lock_is_refused(workflow, model_server):
    plan = await build_plan(workflow, get_settings())
    lock = json.loads(plan.lock_path.read_text())
    lock["files"]["unet/high.gguf"]["sha256"] = "0" * 64
    plan.lock_path.write_text(json.dumps(lock))
    with pytest.raises(UpstreamChanged) as exc:
        await build_plan(workflow, get_settings())
    assert exc.value.file == "high.gguf"


async def test_node_sources_override_git_url_and_commit(workflow, node_repos):
    plan = await build_plan(workflow, get_settings(), resolve=False, node_sources=workflow.node_sources)
    by_name = {n.name: n for n in plan.nodes}
    assert by_name["ComfyUI-GGUF"].git_url == node_repos["ComfyUI-GGUF"].url
    assert by_name["ComfyUI-GGUF"].commit == node_repos["ComfyUI-GGUF"].commits[0]


async def test_custom_node_sources_setting_applies_without_arguments(workflow, monkeypatch):
    monkeypatch.setenv("CUSTOM_NODE_SOURCES", json.dumps({"ComfyUI-GGUF": ["/srv/git/gguf.git", "abc1234"]}))
    get_settings.cache_clear()
    plan = await build_plan(workflow, get_settings(), resolve=False)
    by_name = {n.name: n for n in plan.nodes}
    assert (by_name["ComfyUI-GGUF"].git_url, by_name["ComfyUI-GGUF"].commit) == (
        "/srv/git/gguf.git",
        "abc1234",
    )
    assert by_name["ComfyUI-VideoHelperSuite"].git_url.startswith("https://github.com/")
