import json
import os
import time

import pytest
from typer.testing import CliRunner

import app.jobs.wiring as wiring
from app.cli import cli
from app.config import Settings
from app.db import make_sessionmaker
from app.jobs.models import JobState
from app.jobs.repo import JobRepo
from app.jobs.services import assemble
from tests.jobs.fakes import (
    FakeComfy,
    FakeLedger,
    FakePreparer,
    FakeProvider,
    FakeStore,
    png_bytes,
    workflow_loader,
)
from tests.jobs.harness import create_tables

pytestmark = pytest.mark.usefixtures("database")  # runs on SQLite and on PostgreSQL

runner = CliRunner()


def _fake_build(tmp_path, comfy):
    async def build(settings: Settings):
        engine = await create_tables(settings.effective_database_url)
        provider = FakeProvider()
        provider.ledger = FakeLedger()
        return assemble(
            settings,
            sessionmaker=make_sessionmaker(engine),
            provider=provider,
            preparer=FakePreparer(),
            comfy=comfy,
            store=FakeStore(tmp_path / "store"),
            workflows=workflow_loader(),
            ledger=provider.ledger,
            engine=engine,
        )

    return build


def test_generate_runs_the_pipeline_and_writes_the_video(tmp_path, monkeypatch):
    monkeypatch.setattr(wiring, "build_services", _fake_build(tmp_path, FakeComfy(step_delay=0.01)))
    img = tmp_path / "in.png"
    img.write_bytes(png_bytes(128, 64))
    out = tmp_path / "out.mp4"
    res = runner.invoke(
        cli,
        [
            "generate",
            "--image",
            str(img),
            "--prompt",
            "waves",
            "--seed",
            "5",
            "--frames",
            "33",
            "--output",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "video: http://store.test/results/" in res.output and f"local: {out}" in res.output
    assert "seed 5, 33 frames" in res.output
    assert out.stat().st_size > 0


def test_generate_json_output(tmp_path, monkeypatch):
    monkeypatch.setattr(wiring, "build_services", _fake_build(tmp_path, FakeComfy()))
    img = tmp_path / "in.png"
    img.write_bytes(png_bytes())
    res = runner.invoke(
        cli, ["generate", "--image", str(img), "--prompt", "x", "--json", "--output", str(tmp_path / "o.mp4")]
    )
    assert res.exit_code == 0, res.output
    job = json.loads(res.output)
    assert job["state"] == "succeeded" and job["local_path"].endswith("o.mp4")


def test_generate_bad_parameter_is_one_line_error_exit_2(tmp_path, monkeypatch):
    from app.cli import main

    monkeypatch.setattr(wiring, "build_services", _fake_build(tmp_path, FakeComfy()))
    img = tmp_path / "in.png"
    img.write_bytes(png_bytes())
    try:
        main(["generate", "--image", str(img), "--prompt", "x", "--frames", "80"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("expected exit 2")


def test_generate_missing_image_file_names_the_field_before_anything_starts(tmp_path, monkeypatch):
    # It used to start the whole simulated world (seconds) and only then say the file was not there.
    started = []

    async def build_services(settings):
        started.append(settings)
        raise AssertionError("services built for a request that cannot run")

    monkeypatch.setattr(wiring, "build_services", build_services)
    for option in ("--image", "--end-image", "--audio"):
        args = ["generate", "--image", str(tmp_path / "nope.png"), "--prompt", "x"]
        if option != "--image":
            (tmp_path / "in.png").write_bytes(png_bytes())
            args = [
                "generate",
                "--image",
                str(tmp_path / "in.png"),
                option,
                str(tmp_path / "nope"),
                "--prompt",
                "x",
            ]
        res = runner.invoke(cli, args)
        assert res.exit_code != 0
        assert str(res.exception).startswith(f"{option}: ") and "is not a file" in str(res.exception)
    assert started == []


async def _stuck_job(db_url):
    engine = await create_tables(db_url)
    repo = JobRepo(make_sessionmaker(engine))
    job = await repo.create(workflow="w", request={})
    await repo.transition(job.id, JobState.ACQUIRING)
    await engine.dispose()
    return job.id


def test_cleanup_command_fails_stuck_jobs_and_reports_json(tmp_path, monkeypatch, database):
    import asyncio

    monkeypatch.setenv("JOB_TIMEOUT_S", "0")
    job_id = asyncio.run(_stuck_job(database.url))
    stale = tmp_path / "data" / "tmp" / "job_old"
    stale.mkdir(parents=True)
    os.utime(stale, (time.time() - 10**6, time.time() - 10**6))

    res = runner.invoke(cli, ["cleanup", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    actions = json.loads(res.output)
    assert {(a["kind"], a["dry_run"]) for a in actions} == {("stuck_job", True), ("temp_file", True)}
    assert stale.exists()

    res = runner.invoke(cli, ["cleanup"])
    assert res.exit_code == 0, res.output
    assert f"[done] stuck_job {job_id}" in res.output and not stale.exists()


def test_serve_and_generate_are_registered():
    res = runner.invoke(cli, ["--help"])
    for cmd in ("serve", "generate", "cleanup"):
        assert cmd in res.output


def test_generate_cache_hit_overwrites_an_existing_output_file(tmp_path, monkeypatch):
    from app.store.local import LocalStore

    store = LocalStore(tmp_path / "results", "http://127.0.0.1:9")

    async def build(settings: Settings):
        engine = await create_tables(settings.effective_database_url)
        provider = FakeProvider()
        provider.ledger = FakeLedger()
        return assemble(
            settings,
            sessionmaker=make_sessionmaker(engine),
            provider=provider,
            preparer=FakePreparer(),
            comfy=FakeComfy(),
            store=store,
            workflows=workflow_loader(),
            ledger=provider.ledger,
            engine=engine,
        )

    monkeypatch.setattr(wiring, "build_services", build)
    img = tmp_path / "in.png"
    img.write_bytes(png_bytes())
    args = ["generate", "--image", str(img), "--prompt", "x", "--seed", "7", "--output"]
    first = tmp_path / "first.mp4"
    assert runner.invoke(cli, [*args, str(first)]).exit_code == 0
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the video of some earlier, different request")
    res = runner.invoke(cli, [*args, str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["result"]["cached"] is True
    assert out.read_bytes() == first.read_bytes()
