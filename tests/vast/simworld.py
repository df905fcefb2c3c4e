"""A small world for the vast room's integration tests: the R5 emulator plus a backend whose "SSH"
answers with a real banner on 127.0.0.1, a ledger on SQLite, and a provider with fast polling."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from app.config import Settings
from app.db import init_db, make_engine, make_sessionmaker
from app.pool.ledger import InstanceLedger
from app.sim.vast import BackendInfo, VastEmulator, VastFaults, default_market
from app.vast.client import VastClient
from app.vast.provider import VastProvider

API_KEY = "sim_vast_key_abcdef0123456789"


class BannerBackend:
    """Each booted instance gets a TCP listener that greets like sshd (enough for the banner probe)."""

    def __init__(self) -> None:
        self.servers: dict[int, asyncio.Server] = {}
        self.boots: list[tuple[int, dict[str, Any], list[str]]] = []

    async def boot(self, instance_id: int, create_body: dict[str, Any], ssh_keys: list[str]) -> BackendInfo:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"SSH-2.0-OpenSSH_9.6 sim\r\n")
            try:
                await writer.drain()
            finally:
                writer.close()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.servers[instance_id] = server
        self.boots.append((instance_id, create_body, ssh_keys))
        return BackendInfo(
            public_ipaddr="127.0.0.1", ssh_host="127.0.0.1", ssh_port=port, ports={"22/tcp": port}
        )

    async def teardown(self, instance_id: int) -> None:
        server = self.servers.pop(instance_id, None)
        if server is not None:
            server.close()

    async def close(self) -> None:
        for iid in list(self.servers):
            await self.teardown(iid)


class World:
    def __init__(self, emu: VastEmulator, backend: BannerBackend, settings: Settings, db_url: str) -> None:
        self.emu = emu
        self.backend = backend
        self.settings = settings
        self.db_url = db_url
        self._closers: list[Any] = []

    @property
    def faults(self) -> VastFaults:
        return self.emu.faults

    def client(self, **kw: Any) -> VastClient:
        opts = {"timeout": 2.0, "retry_deadline_s": 5.0, "backoff_initial_s": 0.005, "backoff_max_s": 0.02}
        opts.update(kw)
        client = VastClient(self.emu.url, API_KEY, **opts)
        self._closers.append(client.aclose)
        return client

    async def ledger(self) -> InstanceLedger:
        engine = make_engine(self.db_url)
        await init_db(engine)
        self._closers.append(engine.dispose)
        return InstanceLedger(make_sessionmaker(engine))

    async def provider(
        self, *, client: VastClient | None = None, settings: Settings | None = None, **kw: Any
    ) -> VastProvider:
        opts: dict[str, Any] = {
            "poll_initial_s": 0.005,
            "poll_max_s": 0.02,
            "ssh_timeout_s": 2.0,
            "null_grace_s": 1.0,
            "ambiguous_lookup_interval_s": 0.01,
            "reconcile_grace_s": 0.0,
        }
        opts.update(kw)
        return VastProvider(client or self.client(), await self.ledger(), settings or self.settings, **opts)

    def creates(self) -> int:
        return sum(1 for c in self.emu.calls if c.route == "create")

    def live(self) -> dict[int, Any]:
        return dict(self.emu.instances)

    async def close(self) -> None:
        for closer in reversed(self._closers):
            await closer()


@asynccontextmanager
async def world(tmp_path: Path, *, offers: list[dict[str, Any]] | None = None, **emu_kw: Any):
    backend = BannerBackend()
    emu = VastEmulator(
        offers if offers is not None else default_market(200, seed=1),
        api_key=API_KEY,
        time_scale=0.0,
        backend=backend,
        **emu_kw,
    )
    await emu.start("127.0.0.1", 0)
    settings = Settings(
        deployment="t",
        data_dir=tmp_path / "data",
        vast_api_url=emu.url,
        vast_api_key=API_KEY,
        vast_max_price_per_hour=5.0,
        vast_min_reliability=0.9,
        vast_min_inet_down_mbps=100,
        vast_min_cuda=12.0,
    )
    w = World(emu, backend, settings, settings.effective_database_url)
    try:
        yield w
    finally:
        await w.close()
        await emu.stop()
        await backend.close()
