"""Root test configuration. Room-specific fixtures live in tests/<room>/conftest.py and tests/support/."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No test reads the developer's .env or real credentials; each gets its own data dir."""
    for var in (
        "VAST_API_KEY",
        "R2_ACCOUNT_ID",
        "R2_ACCESS_KEY_ID",
        "R2_SECRET_ACCESS_KEY",
        "R2_BUCKET",
        "HF_TOKEN",
        "API_TOKEN",
        "MODEL_MIRROR_URL",
        "WORKFLOWS_DIR",
        "COMFYFLEET_SERVER",
        "COMFYFLEET_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # so a stray .env in the repo is not picked up
    from app.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
