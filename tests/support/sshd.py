"""A real OpenSSH sshd on 127.0.0.1 for tests (what Vast.ai instances run), per testinfra.md.

`start_sshd(workdir)` starts one with its own config, host key and authorized key (root login, random port,
`AcceptEnv *`, `StrictModes no` because keys live under /tmp, `UsePAM no`); the session-scoped `sshd`
fixture wraps it and skips with a reason when /usr/sbin/sshd is missing. Import the fixture into a room's
conftest with `from tests.support.sshd import sshd  # noqa: F401`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest

from app.pool.provider import SSHTarget

SSHD_BIN = "/usr/sbin/sshd"


@dataclass
class SSHD:
    host: str
    port: int
    host_key_line: str  # "ssh-ed25519 AAAA..." of the server
    client_key_path: Path  # private key authorized for root
    client_public_key: str
    dir: Path
    proc: subprocess.Popen = field(repr=False)
    user: str = "root"

    def target(self, *, pinned: bool = True) -> SSHTarget:
        return SSHTarget(self.host, self.port, self.user, self.host_key_line if pinned else None)

    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_key_line}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def unavailable_reason() -> str | None:
    if not os.path.exists(SSHD_BIN):
        return f"{SSHD_BIN} is missing (apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "the real-sshd fixture logs in as root and must run as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sshd(workdir: Path, *, attempts: int = 5) -> SSHD:
    """Start sshd in `workdir` (config, keys, logs there). Raises RuntimeError when it cannot start."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", exist_ok=True)
    host_key = workdir / "host_ed25519"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    client = asyncssh.generate_private_key("ssh-ed25519")
    client_path = workdir / "client_ed25519"
    client.write_private_key(str(client_path))
    client_path.chmod(0o600)
    client_pub = client.export_public_key("openssh").decode().strip()
    (workdir / "authorized_keys").write_text(client_pub + "\n")
    host_line = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    last_error = ""
    for _ in range(attempts):
        port = _free_port()
        cfg = workdir / "sshd_config"
        cfg.write_text(
            f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {workdir}/authorized_keys
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
Subsystem sftp internal-sftp
AcceptEnv *
AllowTcpForwarding yes
LogLevel VERBOSE
"""
        )
        log = (workdir / "sshd.log").open("ab")
        proc = subprocess.Popen([SSHD_BIN, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=log)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return SSHD("127.0.0.1", port, host_line, client_path, client_pub, workdir, proc)
            except OSError:
                time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        last_error = (workdir / "sshd.log").read_text(errors="replace")[-500:]
    raise RuntimeError(f"sshd did not start: {last_error}")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()
