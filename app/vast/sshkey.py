"""The control plane's SSH identity: one ed25519 key pair, made on first use, public half sent to Vast."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncssh


def ensure_keypair(private_path: Path) -> str:
    """Return the OpenSSH public key line for `private_path`, generating the pair (0600) if missing."""
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    if not private_path.exists():
        private_path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="comfyfleet")
        tmp = private_path.with_name(f"{private_path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(key.export_private_key())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, private_path)  # only if absent: two processes starting at once keep one key
        except FileExistsError:
            key = asyncssh.read_private_key(str(private_path))
        finally:
            tmp.unlink()
        _write_public(public_path, key)
    elif not public_path.exists():
        _write_public(public_path, asyncssh.read_private_key(str(private_path)))
    return public_path.read_text().strip()


def _write_public(public_path: Path, key: asyncssh.SSHKey) -> None:
    tmp = public_path.with_name(f"{public_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(key.export_public_key())
    os.replace(tmp, public_path)
