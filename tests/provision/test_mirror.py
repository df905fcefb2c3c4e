"""The R2 model mirror against SeaweedFS (a real S3 server): copy, skip, provision from it, fall back."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.config import REPO_ROOT, get_settings
from app.provision import connect, run_provision
from app.provision.mirror import apply_r2_mirror, mirror_key, mirror_models
from app.redact import RedactingFilter
from app.sim.modelserver import FileSpec, ModelServer, default_files
from app.store.r2 import MB, R2Store
from tests.support.seaweedfs import SeaweedFS, seaweedfs  # noqa: F401 (session fixture)

pytestmark = [pytest.mark.sshd, pytest.mark.seaweedfs]
HUB = ("127.0.0.1",)  # the model server's HF-style route stands in for the Hub


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def provision(remote, plan):
    events: list[dict] = []
    async with await connect(remote.target, remote.key_path) as conn:
        summary = await run_provision(conn, plan, events.append, remote_dir=remote.remote_dir)
    return summary, events


@pytest.fixture
def big(model_server: ModelServer) -> str:
    """A file larger than two upload parts (multipart) and many download segments; before `workflow`."""
    model_server.add(FileSpec("unet", "big.gguf", 12 * MB))
    return "big.gguf"


@pytest.fixture
async def r2mirror(seaweedfs: SeaweedFS, monkeypatch):  # noqa: F811
    bucket = seaweedfs.new_bucket("mirror")
    env = {
        "R2_ENDPOINT_URL": seaweedfs.endpoint,
        "R2_BUCKET": bucket,
        "R2_ACCESS_KEY_ID": seaweedfs.access_key,
        "R2_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    settings = get_settings()
    store = R2Store.from_settings(settings, multipart_threshold=5 * MB, part_size=5 * MB, max_attempts=2)
    yield SimpleNamespace(settings=settings, store=store, bucket=bucket, env=env, s3=seaweedfs.client())
    await store.close()


async def hub_plan(make_plan, **overrides):
    """A plan whose URLs are the HF-style route (what a fresh install fetches), segmented downloads on."""
    plan = await make_plan(mirror=False, segment_bytes=1 * MB, connections=4, **overrides)
    plan.nodes = []
    return plan


async def test_mirror_copies_every_model_then_skips_them(big, make_plan, model_server, r2mirror):
    plan = await hub_plan(make_plan)
    outcomes = await mirror_models(plan.models, r2mirror.settings, r2mirror.store, token_hosts=HUB)

    assert {o.status for o in outcomes} == {"copied"} and len(outcomes) == len(model_server.files)
    for served in model_server.files.values():
        key = mirror_key("models/", served.spec.folder, served.spec.name)
        obj = await r2mirror.store.head(key)
        assert obj is not None and obj.size == served.size and obj.metadata["sha256"] == served.sha256
        body = r2mirror.s3.get_object(Bucket=r2mirror.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == served.sha256
    big_obj = await r2mirror.store.head(mirror_key("models/", "unet", big))
    assert big_obj.etag.endswith("-3")  # 12 MiB in 5 MiB parts: a streamed multipart upload
    assert not r2mirror.s3.list_multipart_uploads(Bucket=r2mirror.bucket).get("Uploads")

    model_server.log.clear()
    again = await mirror_models(plan.models, r2mirror.settings, r2mirror.store, token_hosts=HUB)
    assert {o.status for o in again} == {"present"}
    assert not [r for r in model_server.log if r.method == "GET"]


async def test_provision_from_the_mirror_gets_a_file_missing_there_from_the_hub(
    big, make_plan, model_server, r2mirror, remote
):
    plan = await hub_plan(make_plan)
    await mirror_models(plan.models, r2mirror.settings, r2mirror.store, token_hosts=HUB)
    await r2mirror.store.delete("models/vae/vae.safetensors")

    mirrored = await apply_r2_mirror(plan, r2mirror.settings, store=r2mirror.store)
    by_name = {m.name: m for m in mirrored.models}
    assert by_name["vae.safetensors"].fallback_url is None
    assert "/resolve/" in by_name["vae.safetensors"].url  # not in the mirror: straight from the Hub
    for name in set(by_name) - {"vae.safetensors"}:
        assert "X-Amz-Signature=" in by_name[name].url and "/resolve/" in by_name[name].fallback_url
    model_server.log.clear()

    summary, events = await provision(remote, mirrored)

    assert sorted(summary.downloaded) == sorted(by_name)
    for served in model_server.files.values():
        path = remote.comfy_dir / "models" / served.spec.folder / served.spec.name
        assert sha256(path) == served.sha256
    hub_gets = {r.path.rsplit("/", 1)[-1] for r in model_server.log if r.method == "GET"}
    assert hub_gets == {"vae.safetensors"}  # everything else came from R2
    assert not any(e["event"] == "fallback" for e in events)
    assert next(e for e in events if e["event"] == "done" and e["file"] == big)["connections"] == 4


async def test_mirror_object_gone_after_planning_falls_back_to_the_hub_for_that_file(
    make_plan, model_server, r2mirror, remote
):
    plan = await hub_plan(make_plan)
    await mirror_models(plan.models, r2mirror.settings, r2mirror.store, token_hosts=HUB)
    mirrored = await apply_r2_mirror(plan, r2mirror.settings, store=r2mirror.store)
    await r2mirror.store.delete("models/unet/high.gguf")  # e.g. a lifecycle rule, or a manual clean-up
    model_server.log.clear()

    summary, events = await provision(remote, mirrored)

    assert [e["file"] for e in events if e["event"] == "fallback"] == ["high.gguf"]
    assert sorted(summary.downloaded) == sorted(m.name for m in plan.models)
    assert {r.path.rsplit("/", 1)[-1] for r in model_server.log if r.method == "GET"} == {"high.gguf"}
    assert sha256(remote.comfy_dir / "models/unet/high.gguf") == model_server.file("high.gguf").sha256


async def test_expired_presigned_url_falls_back_to_the_hub(make_plan, model_server, r2mirror, remote):
    plan = await hub_plan(make_plan)
    plan.models = [m for m in plan.models if m.name == "low.gguf"]
    await mirror_models(plan.models, r2mirror.settings, r2mirror.store, token_hosts=HUB)
    key = mirror_key("models/", "unet", "low.gguf")
    m = plan.models[0]
    # Presigned for host "localhost": 127.0.0.1 is a token host in these tests (the Hub stand-in).
    local = R2Store.from_settings(r2mirror.settings.model_copy(update={
        "r2_endpoint_url": r2mirror.settings.r2_endpoint_url.replace("127.0.0.1", "localhost")}))  # fmt: skip
    expired = dataclasses.replace(m, url=local.presign(key, 1), fallback_url=m.url)
    await local.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    async with httpx.AsyncClient() as http:  # wait until R2 (SeaweedFS) really refuses it
        while (await http.get(expired.url, headers={"Range": "bytes=0-0"})).status_code != 403:
            assert loop.time() < deadline, "the presigned URL never expired"
            await asyncio.sleep(0.2)
    model_server.log.clear()

    summary, events = await provision(remote, dataclasses.replace(plan, models=[expired]))

    fallback = next(e for e in events if e["event"] == "fallback")
    assert fallback["file"] == "low.gguf" and "expired presigned URL" in fallback["reason"]
    assert summary.downloaded == ["low.gguf"]
    assert {r.path.rsplit("/", 1)[-1] for r in model_server.log if r.method == "GET"} == {"low.gguf"}
    assert sha256(remote.comfy_dir / "models/unet/low.gguf") == model_server.file("low.gguf").sha256


async def test_mirror_aborts_an_upload_whose_bytes_do_not_match_and_stores_nothing(
    big, make_plan, model_server, r2mirror
):
    model_server.fault(big).corrupt_times = -1
    plan = await hub_plan(make_plan)
    outcomes = await mirror_models(
        [m for m in plan.models if m.name == big], r2mirror.settings, r2mirror.store, token_hosts=HUB
    )

    assert outcomes[0].status == "failed" and "sha256 mismatch" in outcomes[0].message
    assert await r2mirror.store.head(mirror_key("models/", "unet", big)) is None
    assert not r2mirror.s3.list_multipart_uploads(Bucket=r2mirror.bucket).get("Uploads")


async def test_mirror_resumes_a_source_download_that_dropped(big, make_plan, model_server, r2mirror):
    fault = model_server.fault(big)
    fault.drop_at, fault.drop_times = 7_000_000, 1
    plan = await hub_plan(make_plan)
    outcomes = await mirror_models(
        [m for m in plan.models if m.name == big], r2mirror.settings, r2mirror.store, token_hosts=HUB
    )

    assert outcomes[0].status == "copied" and outcomes[0].sha256 == model_server.file(big).sha256
    cdn = [r.range for r in model_server.requests_for(big) if r.path.startswith("/cdn/")]
    assert cdn == [None, "bytes=7000000-"]


async def test_mirror_of_a_file_without_a_known_hash_records_the_hash_it_computed(
    big, make_plan, model_server, r2mirror
):
    plan = await hub_plan(make_plan)
    model = next(dataclasses.replace(m, sha256=None) for m in plan.models if m.name == big)
    outcomes = await mirror_models([model], r2mirror.settings, r2mirror.store, token_hosts=HUB)

    served = model_server.file(big)
    assert outcomes[0].status == "copied" and outcomes[0].sha256 == served.sha256
    obj = await r2mirror.store.head(mirror_key("models/", "unet", big))
    assert obj.metadata["sha256"] == served.sha256 and obj.size == served.size
    keys = [o["Key"] for o in r2mirror.s3.list_objects_v2(Bucket=r2mirror.bucket).get("Contents", [])]
    assert keys == ["models/unet/big.gguf"]  # the temporary upload is gone


async def test_presigned_urls_stay_out_of_ps_logs_events_and_the_instance_disk(
    big, make_plan, model_server, r2mirror, remote
):
    plan = await hub_plan(make_plan)
    plan.models = [m for m in plan.models if m.name in (big, "vae.safetensors")]
    await mirror_models(plan.models, r2mirror.settings, r2mirror.store, token_hosts=HUB)
    # The product's log handler (app.redact.setup_logging): every record goes through RedactingFilter.
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)  # LOG_LEVEL's default (botocore.auth logs request signatures at DEBUG)
    try:
        mirrored = await apply_r2_mirror(plan, r2mirror.settings, store=r2mirror.store)
        signatures = [parse_qs(urlsplit(m.url).query)["X-Amz-Signature"][0] for m in mirrored.models]
        logging.getLogger("test").info("plan: %r", mirrored)  # even a careless log line is redacted

        task = asyncio.create_task(provision(remote, mirrored))
        snapshots = []
        while not task.done():
            proc = await asyncio.create_subprocess_exec("ps", "-ww", "-eo", "args", stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            snapshots.append(out.decode(errors="replace"))
            await asyncio.sleep(0.02)
        summary, events = await task
    finally:
        root.removeHandler(handler)
        root.setLevel(level)

    assert sorted(summary.downloaded) == sorted([big, "vae.safetensors"])
    for sig in signatures:
        assert not any(sig in s for s in snapshots)
        assert sig not in repr(events)
        assert sig not in logs.getvalue()
        for path in remote.comfy_dir.rglob("*"):
            if path.is_file() and path.stat().st_size < 100_000:
                assert sig not in path.read_text(errors="replace"), path


async def test_models_mirror_cli_copies_the_workflow_models_and_check_reports_them(
    r2mirror, tmp_path, served_root
):
    # The shipped workflow, its files served by the model server under their real names (MODEL_MIRROR_URL).
    server = ModelServer(served_root, default_files(0.05))
    url = await server.start()
    env = {**os.environ, **r2mirror.env, "MODEL_MIRROR_URL": url, "DATA_DIR": str(tmp_path / "data")}

    async def cli(*args: str) -> tuple[int, list[dict], str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "models", "mirror", *args, "--json",
            "--workflow", "wan22_i2v_lightx2v_gguf",  # the files this model server serves
            cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, [json.loads(line) for line in out.decode().splitlines()], err.decode()

    try:
        code, events, err = await cli("--check")
        assert code == 2 and "not in the mirror" in err and {e["event"] for e in events} == {"missing"}
        code, events, err = await cli()
        assert code == 0, err
        assert events[-1]["event"] == "summary" and events[-1]["copied"] == 6 and events[-1]["failed"] == 0
        code, events, err = await cli("--check")
        assert code == 0, err
        assert [e["event"] for e in events] == ["present"] * 6
    finally:
        await server.stop()
