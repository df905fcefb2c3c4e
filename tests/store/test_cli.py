"""`comfyfleet store ...` against the local store (default) and against SeaweedFS as R2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.errors import ComfyfleetError
from tests.store.conftest import random_file

runner = CliRunner()


def test_put_head_url_delete_on_the_local_store(tmp_path):
    src = random_file(tmp_path / "clip.mp4", 2048)
    put = runner.invoke(cli, ["store", "put", str(src), "demo/clip.mp4", "--meta", "job-id=j9", "--json"])
    assert put.exit_code == 0, put.output
    data = json.loads(put.output)
    assert data["size"] == 2048 and data["content_type"] == "video/mp4"
    assert data["url"] == "http://127.0.0.1:8000/files/demo/clip.mp4"
    head = runner.invoke(cli, ["store", "head", "demo/clip.mp4"])
    assert head.exit_code == 0 and "2048 bytes, video/mp4" in head.output and "job-id=j9" in head.output
    assert runner.invoke(cli, ["store", "url", "demo/clip.mp4"]).output.strip() == data["url"]
    assert runner.invoke(cli, ["store", "delete", "demo/clip.mp4"]).exit_code == 0
    missing = runner.invoke(cli, ["store", "head", "demo/clip.mp4", "--json"])
    assert missing.exit_code == 1 and json.loads(missing.output) == {"key": "demo/clip.mp4", "exists": False}


def test_check_reports_the_configured_r2_bucket(seaweedfs, monkeypatch):
    bucket = seaweedfs.new_bucket()
    for name, value in {
        "R2_ENDPOINT_URL": seaweedfs.endpoint,
        "R2_BUCKET": bucket,
        "R2_ACCESS_KEY_ID": seaweedfs.access_key,
        "R2_SECRET_ACCESS_KEY": seaweedfs.secret_key,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    result = runner.invoke(cli, ["store", "check", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "ok": True,
        "backend": "R2Store",
        "bucket": bucket,
        "endpoint_url": seaweedfs.endpoint,
    }
    url = runner.invoke(cli, ["store", "url", "results/x/video.mp4"]).output
    assert "X-Amz-Signature=" in url


def test_check_with_wrong_credentials_is_a_one_line_user_error(seaweedfs, monkeypatch):
    for name, value in {
        "R2_ENDPOINT_URL": seaweedfs.endpoint,
        "R2_BUCKET": "public",
        "R2_ACCESS_KEY_ID": seaweedfs.access_key,
        "R2_SECRET_ACCESS_KEY": "definitely-wrong-secret",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    result = runner.invoke(cli, ["store", "check"])
    assert isinstance(result.exception, ComfyfleetError)
    assert "definitely-wrong-secret" not in str(result.exception)


@pytest.mark.parametrize("key", ["../x", "/abs"])
def test_invalid_key_is_a_user_error(key):
    result = runner.invoke(cli, ["store", "url", key])
    assert isinstance(result.exception, ComfyfleetError)
