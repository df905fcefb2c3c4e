"""Host-key pinning, SSH failures as typed errors, and the local port forward to ComfyUI."""

from __future__ import annotations

import asyncssh
import httpx
import pytest
from aiohttp import web

from app.errors import ConfigError
from app.pool.provider import SSHTarget
from app.provision import HostKeyMismatch, SSHAuthFailed, SSHUnavailable, connect, open_tunnel

pytestmark = pytest.mark.sshd


def other_key_line() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


async def test_changed_host_key_is_refused(remote):
    target = SSHTarget(remote.target.host, remote.target.port, "root", other_key_line())
    with pytest.raises(HostKeyMismatch) as exc:
        await connect(target, remote.key_path)
    assert not exc.value.retryable


async def test_first_contact_reports_the_host_key_to_pin(remote):
    seen: list[str] = []
    unpinned = SSHTarget(remote.target.host, remote.target.port, "root", None)
    async with await connect(unpinned, remote.key_path, on_new_host_key=seen.append):
        pass
    assert seen == [remote.target.host_key]
    pinned = SSHTarget(remote.target.host, remote.target.port, "root", seen[0])
    async with await connect(pinned, remote.key_path, on_new_host_key=seen.append) as conn:
        assert (await conn.run("echo pinned", check=True)).stdout == "pinned\n"
    assert len(seen) == 1  # a pinned connection reports nothing new


async def test_refused_client_key_is_auth_failure(remote, tmp_path):
    stranger = tmp_path / "stranger"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    with pytest.raises(SSHAuthFailed):
        await connect(remote.target, stranger)


async def test_unreachable_ssh_is_retryable(unused_tcp_port, remote):
    with pytest.raises(SSHUnavailable) as exc:
        await connect(SSHTarget("127.0.0.1", unused_tcp_port), remote.key_path, connect_timeout_s=3)
    assert exc.value.retryable


@pytest.mark.parametrize("remote", ["sshd", "sandbox"], indirect=True)
async def test_tunnel_reaches_a_service_on_the_instance_loopback(remote):
    async def stats(_request: web.Request) -> web.Response:
        return web.json_response({"comfy": "yes"})

    app = web.Application()
    app.router.add_get("/system_stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    comfy_port = site._server.sockets[0].getsockname()[1]
    try:
        async with await connect(remote.target, remote.key_path) as conn:
            local_port, close = await open_tunnel(conn, "127.0.0.1", comfy_port)
            assert local_port != comfy_port
            async with httpx.AsyncClient(timeout=5) as client:
                r = await client.get(f"http://127.0.0.1:{local_port}/system_stats")
                assert r.json() == {"comfy": "yes"}
            await close()
            async with httpx.AsyncClient(timeout=5) as client:
                with pytest.raises(httpx.ConnectError):
                    await client.get(f"http://127.0.0.1:{local_port}/system_stats")
    finally:
        await runner.cleanup()


async def test_missing_private_key_is_a_config_error(remote, tmp_path):
    with pytest.raises(ConfigError) as exc:
        await connect(remote.target, tmp_path / "no-such-key")
    assert "no-such-key" in str(exc.value)
