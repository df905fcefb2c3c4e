"""The settings object: documented, secret-safe, and choosing the right world."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.config import Settings
from app.errors import ConfigError

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


# --- DATABASE_URL ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db:5432/cf", "postgresql+asyncpg://u:p@db:5432/cf"),
        ("postgres://u@db/cf", "postgresql+asyncpg://u@db/cf"),
        ("postgresql+asyncpg://u@db/cf", "postgresql+asyncpg://u@db/cf"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_url_gets_the_async_driver_of_its_database(given, used):
    assert Settings(database_url=given).effective_database_url == used


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg2://u:hunter2-pw@db/cf", "mysql://u:hunter2-pw@db/cf", "db"]
)
def test_unsupported_database_url_is_a_config_error_that_hides_the_password(url):
    with pytest.raises(ConfigError, match="DATABASE_URL: unsupported scheme") as exc:
        _ = Settings(database_url=url).effective_database_url
    assert "hunter2-pw" not in str(exc.value) and "postgresql+asyncpg://" in str(exc.value)


def test_no_database_url_means_sqlite_under_the_data_dir(tmp_path):
    assert (
        Settings(data_dir=tmp_path).effective_database_url == f"sqlite+aiosqlite:///{tmp_path}/comfyfleet.db"
    )


# --- API tokens -----------------------------------------------------------------------------------
def _tokens(value) -> str:
    return json.dumps(value)


def test_api_token_is_the_default_token_beside_the_named_ones():
    s = Settings(
        api_token="old-single-token",
        api_tokens=_tokens(
            [
                {"name": "ci", "token": "c" * 20, "daily_spend_usd": 5, "rate": "60/minute"},
                {"name": "web", "token": "w" * 20},
            ]
        ),
    )
    tokens = s.api_token_list()
    assert [(t.name, t.daily_spend_usd, t.rate) for t in tokens] == [
        ("default", None, None),
        ("ci", 5, "60/minute"),
        ("web", None, None),
    ]
    assert {"old-single-token", "c" * 20, "w" * 20} <= set(s.secret_values())
    assert "c" * 20 not in repr(s) + repr(tokens)


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        (
            [{"name": "ci", "token": "short-secret"}],
            "entry 0 ('ci'): token: Value error, must be at least 16",
        ),
        ([{"name": "ci", "token": "s" * 20, "rate": "lots"}], "rate: Value error, not a rate"),
        (
            [{"name": "ci", "token": "s" * 20, "daily_spend_usd": -1}],
            "daily_spend_usd: Input should be greater than 0",
        ),
        ([{"name": "bad name", "token": "s" * 20}], "name: String should match pattern"),
        ([{"token": "s" * 20}], "name: Field required"),
        ([{"name": "ci", "token": "s" * 20, "extra": 1}], "extra: Extra inputs are not permitted"),
        ([{"name": "a", "token": "s" * 20}, {"name": "a", "token": "t" * 20}], "'a' is used twice"),
        ([{"name": "a", "token": "s" * 20}, {"name": "b", "token": "s" * 20}], "the same secret"),
        ({"name": "ci"}, "must be a JSON list"),
    ],
)
def test_malformed_api_tokens_name_the_entry_and_field_but_never_the_token(entries, words):
    s = Settings(api_tokens=_tokens(entries))
    with pytest.raises(ConfigError) as exc:
        s.api_token_list()
    assert words in str(exc.value)
    for secret in ("short-secret", "s" * 20, "t" * 20):
        assert secret not in str(exc.value)


def test_api_tokens_that_are_not_json_are_a_config_error():
    with pytest.raises(ConfigError, match="not valid JSON"):
        Settings(api_tokens="[{name: ci}]").api_token_list()


def test_a_named_token_called_default_clashes_with_api_token():
    s = Settings(api_token="x", api_tokens=_tokens([{"name": "default", "token": "d" * 20}]))
    with pytest.raises(ConfigError, match="API_TOKEN's"):
        s.api_token_list()
