"""Pure logic of the plan's download settings and of choosing the R2 mirror per file (no servers)."""

from __future__ import annotations

import dataclasses
import logging

from app.config import Settings
from app.provision.mirror import apply_r2_mirror, mirror_key, presign_lifetime_s
from app.provision.plan import Plan, PlannedModel
from app.store.base import StoredObject, StoreUnavailable

SHA = "a" * 64
R2 = dict(
    r2_endpoint_url="http://127.0.0.1:9", r2_bucket="b", r2_access_key_id="ak", r2_secret_access_key="sk"
)


def model(name: str, sha: str | None = SHA, size: int = 1000) -> PlannedModel:
    url = f"https://huggingface.co/acme/m/resolve/main/{name}"
    return PlannedModel("unet", name, url, size, True, sha, url)


class FakeMirror:
    """head() answers from `objects` (key -> (size, sha256)); `fail` makes it raise like an R2 outage."""

    def __init__(self, objects: dict[str, tuple[int, str | None]], fail: bool = False) -> None:
        self.objects, self.fail, self.presigned = objects, fail, []

    async def head(self, key: str) -> StoredObject | None:
        if self.fail:
            raise StoreUnavailable("cannot reach R2")
        if key not in self.objects:
            return None
        size, sha = self.objects[key]
        return StoredObject(key, size, "application/octet-stream", {"sha256": sha} if sha else {}, "e")

    def presign(self, key: str, expires_in_s: int) -> str:
        self.presigned.append((key, expires_in_s))
        return f"https://r2.example/{key}?X-Amz-Signature=s"


def test_plan_carries_connection_settings_and_the_fallback_url_as_seventh_field():
    settings = Settings(
        provision_connections_per_file=6, provision_connections_total=12, provision_segment_mb=32
    )
    plan = Plan(
        "wf",
        [dataclasses.replace(model("a.gguf"), url="https://r2.example/a?sig", fallback_url="https://hub/a"),
         model("b.gguf")],
        [],
        connections=settings.provision_connections_per_file,
        max_connections=settings.provision_connections_total,
        segment_bytes=settings.provision_segment_mb << 20,
    )  # fmt: skip
    lines = plan.to_text().splitlines()
    assert "set\tconnections\t6" in lines and "set\tmax_connections\t12" in lines
    assert f"set\tsegment_size\t{32 << 20}" in lines
    a, b = (line.split("\t") for line in lines if line.startswith("model\t"))
    assert a[5:] == ["https://r2.example/a?sig", "https://hub/a"] and len(b) == 7 and b[6] == "-"


async def test_file_in_the_mirror_with_the_same_hash_comes_from_r2_first():
    settings = Settings(**R2, provision_timeout_s=3600)
    store = FakeMirror({"models/unet/a.gguf": (1000, SHA)})
    plan = Plan("wf", [model("a.gguf"), model("b.gguf")], [])
    out = await apply_r2_mirror(plan, settings, store=store)
    a, b = out.models
    assert a.url.startswith("https://r2.example/models/unet/a.gguf?") and a.fallback_url == plan.models[0].url
    assert (a.sha256, a.size, a.size_exact) == (SHA, 1000, True)
    assert b == plan.models[1]  # not mirrored: unchanged, no fallback
    assert (
        store.presigned
        == [("models/unet/a.gguf", 4200)]
        == [("models/unet/a.gguf", presign_lifetime_s(settings))]
    )


async def test_mirror_holding_another_version_is_not_used():
    store = FakeMirror({"models/unet/a.gguf": (1000, "b" * 64), "models/unet/b.gguf": (999, SHA)})
    plan = Plan("wf", [model("a.gguf"), model("b.gguf")], [])
    out = await apply_r2_mirror(plan, Settings(**R2), store=store)
    assert out.models == plan.models


async def test_mirror_object_without_a_recorded_hash_is_not_used():
    store = FakeMirror({"models/unet/a.gguf": (1000, None)})
    plan = Plan("wf", [model("a.gguf")], [])
    assert (await apply_r2_mirror(plan, Settings(**R2), store=store)).models == plan.models


async def test_file_whose_hash_is_unknown_takes_the_mirrors_hash():
    store = FakeMirror({"models/unet/a.gguf": (1000, SHA)})
    plan = Plan("wf", [model("a.gguf", sha=None)], [])
    (a,) = (await apply_r2_mirror(plan, Settings(**R2), store=store)).models
    assert a.sha256 == SHA and a.fallback_url


async def test_r2_outage_leaves_every_model_on_its_usual_source(caplog):
    caplog.set_level(logging.WARNING)
    plan = Plan("wf", [model("a.gguf")], [])
    out = await apply_r2_mirror(plan, Settings(**R2), store=FakeMirror({}, fail=True))
    assert out.models == plan.models
    assert "using its usual source" in caplog.text


async def test_mirror_off_or_r2_unconfigured_changes_nothing():
    store = FakeMirror({"models/unet/a.gguf": (1000, SHA)})
    plan = Plan("wf", [model("a.gguf")], [])
    assert (
        await apply_r2_mirror(plan, Settings(**R2, model_r2_mirror=False), store=store)
    ).models == plan.models
    assert (await apply_r2_mirror(plan, Settings(), store=store)).models == plan.models
    assert store.presigned == []


def test_mirror_key_joins_prefix_folder_and_name():
    assert mirror_key("models/", "loras/wan", "x.safetensors") == "models/loras/wan/x.safetensors"
    assert mirror_key("", "vae", "v.safetensors") == "vae/v.safetensors"
    assert mirror_key("/team/models/", "unet", "a.gguf") == "team/models/unet/a.gguf"
