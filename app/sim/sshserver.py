"""An in-process SSH server for a simulated instance: real `bash -c` commands in a sandbox directory.

It lets the product's unchanged SSH code (SFTP upload, exec with env and stdin, exit codes, local port
forwarding) run against a simulated instance. Differences from a real host: commands run as the current
user with cwd = HOME = the sandbox (relative SFTP paths resolve there too; absolute paths are the machine's
own, as for `bash`), and every environment variable the client sends is accepted. Child processes run in
their own process group and are killed on `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import signal
from collections.abc import Iterable
from pathlib import Path

import asyncssh


class _HomeSFTP(asyncssh.SFTPServer):
    """SFTP as on a real host whose home directory is the sandbox: relative paths resolve against the
    sandbox (where commands run), absolute paths are the machine's own, exactly as `bash` sees them."""

    def __init__(self, chan: asyncssh.SSHServerChannel, home: bytes) -> None:
        super().__init__(chan)
        self._home = home

    def map_path(self, path: bytes) -> bytes:
        return path if path.startswith(b"/") else posixpath.join(self._home, path)


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class _ForwardSession(asyncssh.SSHTCPSession):
    """A forwarded channel piped to a host port chosen by the server (the simulated instance's own
    loopback: its ComfyUI at 127.0.0.1:18188 is really the emulator's random port on this machine)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._chan: asyncssh.SSHTCPChannel | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: list[bytes] = []
        self._eof = False
        self._task: asyncio.Task | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel) -> None:
        self._chan = chan
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        assert self._chan is not None
        try:
            reader, self._writer = await asyncio.wait_for(asyncio.open_connection(*self._target), 10)
        except (OSError, TimeoutError):
            self._chan.close()
            return
        for chunk in self._pending:
            self._writer.write(chunk)
        self._pending.clear()
        if self._eof:
            self._writer.write_eof()
        try:
            while chunk := await reader.read(65536):
                self._chan.write(chunk)
            self._chan.write_eof()
        except (OSError, asyncssh.Error):
            pass
        finally:
            self._chan.close()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._writer is None:
            self._pending.append(data)
        else:
            self._writer.write(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self._writer is not None and self._writer.can_write_eof():
            self._writer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None and not self._task.done() and self._writer is None:
            self._task.cancel()


class _Server(asyncssh.SSHServer):
    def __init__(self, port_map: dict[int, int]) -> None:
        self._port_map = port_map

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int):
        # allow `ssh -L` (the control plane tunnels to ComfyUI on the instance's loopback)
        if dest_host in _LOOPBACK and dest_port in self._port_map:
            return _ForwardSession("127.0.0.1", self._port_map[dest_port])
        return True


class SandboxSSHServer:
    """`SandboxSSHServer(sandbox_dir, authorized_keys)`; `port = await start()`; `host_key_line`; `stop()`."""

    def __init__(
        self,
        sandbox_dir: str | Path,
        authorized_keys: str | Iterable[str],
        *,
        host_key: asyncssh.SSHKey | None = None,
        port_map: dict[int, int] | None = None,
    ) -> None:
        self.sandbox = Path(sandbox_dir).resolve()
        self.sandbox.mkdir(parents=True, exist_ok=True)
        lines = [authorized_keys] if isinstance(authorized_keys, str) else list(authorized_keys)
        self._authorized = asyncssh.import_authorized_keys("\n".join(lines) + "\n")
        self._host_key = host_key or asyncssh.generate_private_key("ssh-ed25519")
        # loopback port on the "instance" -> real port on this machine (see _ForwardSession)
        self.port_map: dict[int, int] = dict(port_map or {})
        self._server: asyncssh.SSHAcceptor | None = None
        self._children: set[asyncio.subprocess.Process] = set()
        self._pgids: set[int] = set()  # every process group we started; descendants may outlive bash
        self.port: int | None = None
        self.commands: list[str] = []  # every command run (for tests and the simulated world's logs)

    @property
    def host_key_line(self) -> str:
        return " ".join(self._host_key.export_public_key("openssh").decode().split()[:2])

    def add_authorized_key(self, key: str) -> None:
        """A key attached while the instance runs (Vast's per-instance `attach ssh`)."""
        self._authorized.load(key.strip() + "\n")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncssh.create_server(
            lambda: _Server(self.port_map),
            host,
            port,
            server_host_keys=[self._host_key],
            authorized_client_keys=self._authorized,
            process_factory=self._handle,
            sftp_factory=lambda chan: _HomeSFTP(chan, str(self.sandbox).encode()),
            allow_scp=True,
            encoding=None,
            keepalive_interval=30,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, process: asyncssh.SSHServerProcess) -> None:
        command = process.command or "exec bash"
        self.commands.append(command)
        # a fresh instance has none of this machine's pip configuration (an index, wheel dirs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env.update({str(k): str(v) for k, v in (process.env or {}).items()})
        env["HOME"] = str(self.sandbox)
        env["PWD"] = str(self.sandbox)
        try:
            child = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                command,
                cwd=self.sandbox,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            process.stderr.write(f"cannot start bash: {exc}\n".encode())
            process.exit(127)
            return
        self._children.add(child)
        self._pgids.add(child.pid)
        try:
            await process.redirect(stdin=child.stdin, stdout=child.stdout, stderr=child.stderr)
            rc = await child.wait()
            with contextlib.suppress(Exception):
                await process.stdout.drain()
                await process.stderr.drain()
            process.exit(rc if rc >= 0 else 128 - rc)
        except (asyncssh.Error, OSError, BrokenPipeError):
            pass
        finally:
            self._children.discard(child)

    async def stop(self) -> None:
        for pgid in list(self._pgids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        self._pgids.clear()
        for child in list(self._children):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(child.wait(), timeout=2)
        self._children.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            self._server = None


def install_restart_hook(comfy_dir: str | Path, command: str) -> Path:
    """Give a simulated machine a ComfyUI restart hook (`<comfy_dir>/.comfyfleet/restart`).

    provision.sh (restart "auto") runs it after custom nodes changed and expects it to return once
    ComfyUI answers again; e.g. `sim_restart_command(url)` for the ComfyUI emulator.
    """
    hook = Path(comfy_dir) / ".comfyfleet" / "restart"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(f"#!/bin/sh\n{command}\n")
    hook.chmod(0o755)
    return hook


def sim_restart_command(comfy_url: str) -> str:
    """The ComfyUI emulator's restart: `POST /__sim/restart` re-scans custom nodes as a restart would."""
    return f"curl -fsS -X POST --max-time 60 -o /dev/null {comfy_url.rstrip('/')}/__sim/restart"
