"""Per-file provisioning progress built from provision.sh's events (what GET /instances/{id} shows)."""

from __future__ import annotations

from app.provision.plan import Plan, PlannedModel, PlannedNode
from app.provision.progress import ProvisionTracker


def _plan() -> Plan:
    models = [
        PlannedModel("unet", "a.gguf", "http://m/a", 1000, True, "a" * 64, "http://m/a"),
        PlannedModel("vae", "b.safetensors", "http://m/b", 500, True, None, "http://m/b"),
        PlannedModel("loras", "c.safetensors", "http://m/c", 300, True, None, "http://m/c"),
    ]
    return Plan(workflow="wf", models=models, nodes=[PlannedNode("Pack", "git://x", "abc")])


def test_every_planned_file_is_listed_before_any_event():
    snap = ProvisionTracker.for_plan(_plan()).snapshot()
    assert [f["name"] for f in snap["files"]] == ["a.gguf", "b.safetensors", "c.safetensors"]
    assert all(f["state"] == "pending" and not f["verified"] for f in snap["files"])
    assert (
        snap["bytes_total"] == 1800
        and snap["bytes_done"] == 0
        and snap["custom_nodes"] == {"Pack": "pending"}
    )


def test_download_progress_done_skipped_and_a_failed_file():
    t = ProvisionTracker.for_plan(_plan())
    for event in [
        {"event": "skipped", "file": "b.safetensors", "reason": "verified"},
        {"event": "start", "file": "a.gguf", "offset": 100, "total": 1000},
        {"event": "progress", "file": "a.gguf", "bytes": 600, "total": 1000},
        {"event": "start", "file": "c.safetensors", "offset": 0, "total": 300},
        {"event": "retry", "file": "c.safetensors", "offset": 0, "attempt": 1, "reason": "reset"},
        {"event": "error", "file": "c.safetensors", "code": 11, "message": "HTTP 404"},
        {"event": "node_start", "node": "Pack"},
    ]:
        t.feed(event)
    files = {f["name"]: f for f in t.snapshot()["files"]}
    assert files["a.gguf"]["state"] == "downloading" and files["a.gguf"]["bytes_done"] == 600
    assert files["b.safetensors"]["verified"] and files["b.safetensors"]["bytes_done"] == 500
    assert files["c.safetensors"]["state"] == "failed" and files["c.safetensors"]["retries"] == 1
    assert files["c.safetensors"]["error"] == "HTTP 404"
    t.feed({"event": "done", "file": "a.gguf", "bytes": 1000, "sha256": "f" * 64})
    t.feed({"event": "node_done", "node": "Pack"})
    t.finish()
    snap = t.snapshot()
    a = next(f for f in snap["files"] if f["name"] == "a.gguf")
    assert a["verified"] and a["sha256"] == "f" * 64 and a["bytes_done"] == 1000
    assert (
        snap["state"] == "done" and snap["files_verified"] == 2 and snap["custom_nodes"] == {"Pack": "done"}
    )


def test_a_file_whose_present_copy_fails_its_check_is_not_verified():
    t = ProvisionTracker.for_plan(_plan())
    t.feed({"event": "invalid", "file": "a.gguf", "reason": "sha256 differs"})
    assert next(f for f in t.snapshot()["files"] if f["name"] == "a.gguf")["state"] == "invalid"
    t.finish("download failed")
    assert t.snapshot()["state"] == "failed" and t.snapshot()["error"] == "download failed"
