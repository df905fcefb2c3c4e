"""The simulated instance's SSH server: sandboxed commands and SFTP, and no leftover processes."""

from __future__ import annotations

import asyncio

import asyncssh

from app.pool.provider import SSHTarget
from app.provision import connect
from app.sim.sshserver import SandboxSSHServer


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that this container's init may never be counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_sandbox_runs_commands_in_its_dir_and_kills_them_on_stop(tmp_path):
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = tmp_path / "key"
    key.write_private_key(str(key_path))
    server = SandboxSSHServer(tmp_path / "box", key.export_public_key("openssh").decode())
    port = await server.start()
    target = SSHTarget("127.0.0.1", port, "root", server.host_key_line)
    try:
        async with await connect(target, key_path) as conn:
            result = await conn.run("pwd; echo $GREETING; exit 3", env={"GREETING": "hi"}, check=False)
            assert result.stdout == f"{server.sandbox}\nhi\n" and result.exit_status == 3
            async with conn.start_sftp_client() as sftp:
                async with sftp.open("inside.txt", "w") as f:  # relative: the sandbox is the home dir
                    await f.write("home")
                async with sftp.open(str(tmp_path / "abs.txt"), "w") as f:  # absolute: as bash sees it
                    await f.write("abs")
            assert (server.sandbox / "inside.txt").read_text() == "home"
            assert (await conn.run(f"cat inside.txt {tmp_path / 'abs.txt'}", check=True)).stdout == "homeabs"
            # A no-PTY background job outlives its channel, as on a real host...
            pid_line = await conn.run("sleep 60 >/dev/null 2>&1 & echo $!", check=True)
            pid = int(pid_line.stdout)
        assert alive(pid)
    finally:
        await server.stop()
    # ...until the simulated instance goes away.
    for _ in range(20):
        if not alive(pid):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"process {pid} survived SandboxSSHServer.stop()")
