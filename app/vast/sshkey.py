"""The control plane's SSH identity: one ed25519 key pair, made on first use, public half sent to Vast."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh


def ensure_keypair(private_path: Path) -> str:
    """Return the OpenSSH public key line for `private_path`, generating the pair (0600) if missing."""
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    if not private_path.exists():
        private_path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="comfyfleet")
        tmp = private_path.with_name(private_path.name + ".tmp")
        tmp.write_bytes(key.export_private_key())
        os.chmod(tmp, 0o600)
        os.replace(tmp, private_path)
        public_path.write_bytes(key.export_public_key())
    elif not public_path.exists():
        key = asyncssh.read_private_key(str(private_path))
        public_path.write_bytes(key.export_public_key())
    return public_path.read_text().strip()
