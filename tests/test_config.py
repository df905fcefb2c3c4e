"""The settings object: documented, secret-safe, and choosing the right world."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import SecretStr

from app.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def test_every_setting_is_documented_in_env_example():
    text = ENV_EXAMPLE.read_text()
    missing = [f.upper() for f in Settings.model_fields if not re.search(rf"^#?\s*{f.upper()}=", text, re.M)]
    assert missing == []


def test_secrets_are_secretstr_and_never_printed(monkeypatch):
    monkeypatch.setenv("VAST_API_KEY", "vast-secret-123456")
    monkeypatch.setenv("R2_SECRET_ACCESS_KEY", "r2-secret-abcdef")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_xyz")
    s = Settings()
    for name in (
        "vast_api_key",
        "r2_secret_access_key",
        "r2_access_key_id",
        "hf_token",
        "api_token",
        "webhook_secret",
    ):
        assert Settings.model_fields[name].annotation == SecretStr | None, name
    shown = repr(s) + str(s) + s.model_dump_json()
    for secret in ("vast-secret-123456", "r2-secret-abcdef", "hf_secret_token_xyz"):
        assert secret not in shown
    assert set(s.secret_values()) >= {"vast-secret-123456", "r2-secret-abcdef", "hf_secret_token_xyz"}


def test_no_vast_key_means_the_simulated_world(monkeypatch):
    s = Settings()
    assert s.effective_provider == "sim" and s.simulated
    assert s.effective_store_backend == "local"
    monkeypatch.setenv("VAST_API_KEY", "k" * 32)
    monkeypatch.setenv("R2_BUCKET", "videos")
    s = Settings()
    assert s.effective_provider == "vast" and not s.simulated
    assert s.effective_store_backend == "r2"


def test_list_settings_accept_csv_and_json(monkeypatch):
    monkeypatch.setenv("VAST_GPU_NAMES", "RTX 4090, RTX 3090")
    monkeypatch.setenv("VAST_REGIONS", '["US", "CA"]')
    s = Settings()
    assert s.vast_gpu_names == ["RTX 4090", "RTX 3090"] and s.vast_regions == ["US", "CA"]


def test_passwords_inside_configured_urls_are_secrets():
    s = Settings(
        database_url="postgresql+asyncpg://fleet:db-pass-4321@db.internal/fleet",
        model_mirror_url="https://mirror:mirror-pass-8765@models.example.com/wan",
        static_endpoints=[{"name": "box", "url": "https://me:box-pass-1234@gpu.example.com"}],
    )
    assert set(s.secret_values()) >= {"db-pass-4321", "mirror-pass-8765", "box-pass-1234"}
