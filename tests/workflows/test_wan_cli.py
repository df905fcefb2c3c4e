"""CLI for the Wan family (issue 11): `workflow list` shows inputs, `workflow render` takes every input
and request feature (a graph can be rendered without the files), `generate` takes them too."""

from __future__ import annotations

import json
import math
import struct
import wave

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings
from app.db import make_sessionmaker
from app.jobs import wiring
from app.jobs.services import assemble
from app.workflows import get_workflow
from tests.jobs.fakes import FakeComfy, FakeLedger, FakePreparer, FakeProvider, FakeStore, png_bytes
from tests.jobs.harness import create_tables

runner = CliRunner()


def test_list_shows_inputs():
    result = runner.invoke(cli, ["workflow", "list"])
    assert result.exit_code == 0, result.output
    for name in ("wan22_s2v", "wan22_t2v_lightx2v_gguf", "wan22_flf2v_lightx2v_gguf", "wan22_ti2v_5b"):
        assert name in result.output
    assert (
        "image, audio" in result.output
        and "text only" in result.output
        and "image, end_image" in result.output
    )
    entries = {w["name"]: w for w in json.loads(runner.invoke(cli, ["workflow", "list", "--json"]).output)}
    assert entries["wan22_s2v"]["inputs"]["audio"]["mode"] == "required"
    assert entries["wan22_fun_camera"]["camera"]["poses"]["pan_left"] == "Pan Left"
    assert entries["wan22_i2v_lightx2v_gguf"]["presets"]["high"]["workflow"] == "wan22_i2v_hq_gguf"


def test_render_s2v_without_the_audio_file():
    result = runner.invoke(
        cli,
        [
            "workflow",
            "render",
            "wan22_s2v",
            "--prompt",
            "a singer",
            "--image-name",
            "ref.png",
            "--audio-name",
            "song.mp3",
            "--audio-seconds",
            "14",
            "--seed",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    graph = json.loads(result.output)["prompt"]
    assert graph["58"]["inputs"]["audio"] == "song.mp3"
    assert sum(n["class_type"] == "WanSoundImageToVideoExtend" for n in graph.values()) == 2  # 3 chunks


def test_render_flf2v_t2v_and_features():
    result = runner.invoke(
        cli,
        [
            "workflow",
            "render",
            "wan22_flf2v_lightx2v_gguf",
            "--prompt",
            "a fox",
            "--image-name",
            "a.png",
            "--end-image-name",
            "b.png",
            "--camera-motion",
            "dolly_out",
            "--quality-preset",
            "draft",
            "--output-format",
            "webm",
            "--enhance-prompt",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    graph = out["prompt"]
    assert graph["62"]["inputs"]["image"] == "b.png" and graph["61"]["inputs"]["format"] == "video/webm"
    assert out["params"]["steps"] == 2 and "The camera pulls back." in out["params"]["prompt"]
    assert out["applied"]["enhance_prompt"]["by"] == "local"
    t2v = runner.invoke(
        cli, ["workflow", "render", "wan22_t2v_lightx2v_gguf", "--prompt", "a fox", "--seed", "2"]
    )
    assert t2v.exit_code == 0, t2v.output
    assert not any(n["class_type"] == "LoadImage" for n in json.loads(t2v.output).values())


def test_render_refuses_an_input_the_workflow_does_not_take():
    result = runner.invoke(
        cli, ["workflow", "render", "wan22_t2v_lightx2v_gguf", "--prompt", "x", "--image-name", "a.png"]
    )
    assert result.exit_code != 0 and "--image-name" in str(result.exception)


def _wav(path, seconds=1.0, rate=8000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(struct.pack("<h", int(4000 * math.sin(i / 9))) for i in range(int(seconds * rate)))
        )


@pytest.mark.usefixtures("database")
def test_generate_takes_audio_and_features(tmp_path, monkeypatch):
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
            store=FakeStore(tmp_path / "store"),
            workflows=lambda n: get_workflow(n, Settings()),
            ledger=provider.ledger,
            engine=engine,
        )

    monkeypatch.setattr(wiring, "build_services", build)
    img, audio = tmp_path / "ref.png", tmp_path / "a.wav"
    img.write_bytes(png_bytes(96, 64))
    _wav(audio)
    res = runner.invoke(
        cli,
        [
            "generate",
            "--workflow",
            "wan22_s2v",
            "--image",
            str(img),
            "--audio",
            str(audio),
            "--prompt",
            "sing",
            "--camera-motion",
            "static",
            "--quality-preset",
            "draft",
            "--json",
            "--output",
            str(tmp_path / "o.mp4"),
        ],
    )
    assert res.exit_code == 0, res.output
    job = json.loads(res.output)
    assert job["state"] == "succeeded"
    assert job["result"]["applied"]["camera_motion"]["move"] == "static"
    assert job["result"]["audio_seconds"] == 1.0 and job["params"]["steps"] == 2
    bad = runner.invoke(
        cli,
        ["generate", "--workflow", "wan22_s2v", "--image", str(img), "--audio", str(img), "--prompt", "x"],
    )
    assert bad.exit_code != 0 and "--audio" in str(bad.exception)
