"""Pure pieces of the provider: state mapping, SSH target choice, labels, create body, SSH key pair."""

from __future__ import annotations

import stat

import asyncssh

from app.config import Settings
from app.pool.provider import InstanceState
from app.vast.offers import ClipProfile, OfferRequirements, expected_cost_per_clip
from app.vast.provider import VastProvider, ssh_target_of, vast_state
from app.vast.sshkey import ensure_keypair


def test_vast_state_mapping():
    assert vast_state(None) == InstanceState.BOOTING
    assert vast_state("loading", "4f4f: Pull complete") == InstanceState.BOOTING
    assert vast_state("running") == InstanceState.BOOTING  # usable only once SSH answers
    for bad in ("exited", "offline", "unknown", "stopped"):
        assert vast_state(bad) == InstanceState.FAILED
    assert vast_state("created") == InstanceState.BOOTING
    assert vast_state("created", "Error: OCI runtime create failed: exec") == InstanceState.FAILED


def test_ssh_target_prefers_direct_then_proxy():
    direct = {
        "public_ipaddr": "203.0.113.45 ",
        "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "40122"}]},
        "ssh_host": "ssh2.vast.ai",
        "ssh_port": 18720,
    }
    t = ssh_target_of(direct)
    assert (t.host, t.port, t.user) == ("203.0.113.45", 40122, "root")
    proxy = dict(direct, ports=None)
    assert (ssh_target_of(proxy).host, ssh_target_of(proxy).port) == ("ssh2.vast.ai", 18720)
    assert ssh_target_of({"ssh_host": None, "ssh_port": None, "ports": []}) is None
    assert ssh_target_of({"ssh_host": "h", "ssh_port": 0}) is None


def _provider(**settings) -> VastProvider:
    return VastProvider(client=None, ledger=None, settings=Settings(deployment="prod", **settings))  # type: ignore[arg-type]


def test_labels_are_unique_and_ours():
    p = _provider()
    labels = {p.new_label() for _ in range(100)}
    assert len(labels) == 100 and all(p.is_ours(x) for x in labels)
    assert not p.is_ours("comfyfleet-other-abc") and not p.is_ours(None)


def test_create_body_tunnel_and_direct():
    offer = {
        "id": 5,
        "machine_id": 9,
        "gpu_name": "RTX 4090",
        "dph_total": 0.4,
        "direct_port_count": 0,
        "inet_down": 500,
    }
    ranked = expected_cost_per_clip(offer, OfferRequirements(), ClipProfile())
    body = _provider().create_body(ranked, "comfyfleet-prod-x", "tok", 41.0)
    assert body["runtype"] == "ssh_proxy" and body["cancel_unavail"] is True and "price" not in body
    assert body["env"]["WEB_PASSWORD"] == "tok" and "-p 8188:8188" not in body["env"]
    assert "--port 18188" in body["env"]["COMFYUI_ARGS"] and body["disk"] == 41.0
    body = _provider(comfy_access="direct").create_body(ranked, "l", "tok", 5.0)
    assert body["env"]["-p 8188:8188"] == "1" and body["disk"] == 10.0


def test_ssh_keypair_is_made_once_with_private_permissions(tmp_path):
    key = tmp_path / "ssh" / "id_ed25519"
    pub = ensure_keypair(key)
    assert pub.startswith("ssh-ed25519 ")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ensure_keypair(key) == pub
    (tmp_path / "ssh" / "id_ed25519.pub").unlink()
    assert ensure_keypair(key).split()[:2] == pub.split()[:2]  # public half rebuilt from the private key


def test_other_deployment_whose_name_extends_ours_is_not_ours():
    # Deployment "prod" must not claim "prod-eu"'s instances (cleanup would destroy them as orphans).
    prod, prod_eu = _provider(), VastProvider(None, None, Settings(deployment="prod-eu"))  # type: ignore[arg-type]
    assert not prod.is_ours(prod_eu.new_label())
    assert not prod_eu.is_ours(prod.new_label())
    assert prod.is_ours("comfyfleet-prod-stray") and not prod.is_ours("comfyfleet-prod-")


def test_two_processes_making_the_ssh_key_at_once_keep_one_pair(tmp_path, monkeypatch):
    # Two replicas starting together on one data folder both found no key and both made one; the public
    # half written last could belong to the private key that lost the race.
    import threading

    import app.vast.sshkey as sshkey

    both_made = threading.Barrier(2, timeout=20)
    real_generate = sshkey.asyncssh.generate_private_key

    def generate_together(*args, **kwargs):
        key = real_generate(*args, **kwargs)
        both_made.wait()
        return key

    monkeypatch.setattr(sshkey.asyncssh, "generate_private_key", generate_together)
    key = tmp_path / "ssh" / "id_ed25519"
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_keypair(key))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    private = asyncssh.read_private_key(str(key))
    expected = private.export_public_key().decode().strip()
    assert results == [expected, expected]
    assert [p.name for p in sorted(key.parent.iterdir())] == ["id_ed25519", "id_ed25519.pub"]
