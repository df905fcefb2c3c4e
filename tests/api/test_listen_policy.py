"""Secure defaults: with a real provider configured, `serve` will not listen beyond loopback without an API
token (a clear message and a non-zero exit) unless ALLOW_UNAUTHENTICATED says so."""

from __future__ import annotations

import json

import pytest

from app.api.auth import check_listen_policy, is_loopback
from app.cli import main
from app.config import Settings
from app.errors import ConfigError

VAST = {"vast_api_key": "k" * 32}
STATIC = {"static_endpoints": [{"name": "box", "url": "http://10.0.0.5:8188"}]}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "localhost", "::1", "[::1]"])
def test_loopback_addresses_are_loopback(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.1.10", "myserver.example.com", ""])
def test_other_addresses_and_host_names_are_not_loopback(host):
    assert not is_loopback(host)


@pytest.mark.parametrize("provider", [VAST, STATIC], ids=["vast", "static"])
def test_real_provider_on_a_public_address_without_a_token_is_refused(provider):
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0 without an API token") as exc:
        check_listen_policy(Settings(**provider), "0.0.0.0")
    assert "ALLOW_UNAUTHENTICATED=true" in str(exc.value) and "API_TOKEN" in str(exc.value)


@pytest.mark.parametrize(
    "extra",
    [
        {"api_token": "t"},
        {"api_tokens": json.dumps([{"name": "ci", "token": "c" * 20}])},
        {"allow_unauthenticated": True},
    ],
    ids=["api_token", "api_tokens", "allowed_explicitly"],
)
def test_a_token_or_the_explicit_setting_lets_a_real_provider_listen_publicly(extra):
    check_listen_policy(Settings(**VAST, **extra), "0.0.0.0")


def test_real_provider_on_loopback_and_the_simulated_world_anywhere_need_no_token():
    check_listen_policy(Settings(**VAST), "127.0.0.1")
    check_listen_policy(Settings(), "0.0.0.0")


def test_serve_exits_non_zero_with_the_reason_before_starting_anything(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("VAST_API_KEY", "k" * 32)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--host", "0.0.0.0", "--port", "9"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0 without an API token" in err and "Traceback" not in err
    assert "k" * 32 not in err
    assert not (tmp_path / "data" / "comfyfleet.db").exists()  # nothing was started
