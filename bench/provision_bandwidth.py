"""Benchmark: does provisioning saturate the link, is re-provisioning cheap, does the control plane stay flat?

A model server (separate process) serves the six Wan 2.2 files (real names, scaled-down sizes) behind a
total bandwidth cap; provisioning runs over a real OpenSSH sshd on loopback (the in-process sandbox SSH
server when sshd is missing). Prints end-to-end throughput as a fraction of the cap, the time of a
second (everything present) provision, and this process's RSS before/peak/after.

    python bench/provision_bandwidth.py [--cap-mbps 40] [--scale 16] [--parallel 4] [--transport sandbox]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from app.config import Settings
from app.provision import build_plan, connect, run_provision
from app.sim.modelserver import default_files

REPO = Path(__file__).resolve().parent.parent
# asyncssh's in-process server leaves this behind on connection close (see testinfra.md); harmless.
warnings.filterwarnings("ignore", "coroutine 'Queue.join' was never awaited", RuntimeWarning)


def start_model_server(root: Path, cap_mbps: float, scale: float) -> tuple[subprocess.Popen, str]:
    """In its own process, so this process's RSS is the control plane's alone."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.sim.modelserver", "--root", str(root), "--cap-mbps", str(cap_mbps),
         "--scale", str(scale)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)["url"]


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cap-mbps", type=float, default=40.0, help="server bandwidth cap, MB/s (1e6 bytes)")
    parser.add_argument("--scale", type=float, default=16.0, help="x the default tiny sizes (27 MB total)")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--transport", choices=["auto", "sshd", "sandbox"], default="auto")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-provision-"))
    files = default_files(args.scale)
    total = sum(f.size for f in files)
    server, url = await asyncio.to_thread(start_model_server, work / "served", args.cap_mbps, args.scale)

    sshd = None
    sandbox = None
    try:
        from tests.support.sshd import start_sshd, unavailable_reason

        if args.transport != "sandbox" and unavailable_reason() is None:
            sshd = start_sshd(work / "sshd")
            target, key_path, kind = sshd.target(), sshd.client_key_path, "OpenSSH sshd"
        else:
            import asyncssh

            from app.sim.sshserver import SandboxSSHServer

            key = asyncssh.generate_private_key("ssh-ed25519")
            key_path = work / "key"
            key.write_private_key(str(key_path))
            sandbox = SandboxSSHServer(work / "sandbox", key.export_public_key("openssh").decode())
            port = await sandbox.start()
            from app.pool.provider import SSHTarget

            target, kind = SSHTarget("127.0.0.1", port, "root", sandbox.host_key_line), "sandbox SSH server"

        settings = Settings(data_dir=work / "data")
        models = [SimpleNamespace(name=f.name, folder=f.folder, url=f"https://example.invalid/{f.name}",
                                  size=f.size, sha256=None) for f in files]  # fmt: skip
        workflow = SimpleNamespace(name="bench", models=models, custom_nodes=[])
        plan = await build_plan(workflow, settings, mirror_url=url)
        plan = dataclasses.replace(
            plan, comfy_dir=str(work / "ComfyUI"), parallel=args.parallel, min_free_bytes=0, restart_cmd=None
        )

        me = psutil.Process(os.getpid())
        rss: list[int] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                rss.append(me.memory_info().rss)
                await asyncio.sleep(0.05)

        rss_before = me.memory_info().rss
        sampler = asyncio.create_task(sample())
        events = 0

        timeline: list[tuple[float, str]] = []
        marks: dict[str, float] = {}

        def count(event: dict) -> None:
            nonlocal events
            events += 1
            if event.get("event") in ("begin", "summary"):
                marks[event["event"]] = time.monotonic()
            if event.get("event") != "progress":
                timeline.append((time.monotonic(), f"{event.get('event')} {event.get('file', '')}"))

        t0 = time.monotonic()
        async with await connect(target, key_path) as conn:
            t_conn = time.monotonic()
            first = await run_provision(conn, plan, count, remote_dir=str(work / "remote"))
        t1 = time.monotonic()
        stop.set()
        await sampler
        rss_after = me.memory_info().rss

        t2 = time.monotonic()
        async with await connect(target, key_path) as conn:
            second = await run_provision(conn, plan, remote_dir=str(work / "remote"))
        t3 = time.monotonic()

        assert len(first.downloaded) == len(files) and first.bytes_downloaded == total
        assert second.all_skipped and len(second.skipped) == len(files)
        cap = args.cap_mbps * 1e6
        e2e = total / (t1 - t0)
        print(f"transport: {kind}; {len(files)} files, {total / 1e6:.1f} MB; cap {args.cap_mbps:.0f} MB/s; "
              f"parallel {args.parallel}")  # fmt: skip
        print(f"first provision: {t1 - t0:.2f} s end to end (connect {t_conn - t0:.2f} s), "
              f"{e2e / 1e6:.1f} MB/s = {100 * e2e / cap:.1f}% of cap; {events} events")  # fmt: skip
        in_script = total / (marks["summary"] - marks["begin"])
        print(f"  of which SSH session + upload + shell start: {marks['begin'] - t0:.2f} s; in the script "
              f"{in_script / 1e6:.1f} MB/s = {100 * in_script / cap:.1f}% of cap")  # fmt: skip
        print(f"re-provision (all present): {t3 - t2:.2f} s including connect")
        print(f"control-plane RSS: before {rss_before / 2**20:.1f} MiB, peak {max(rss) / 2**20:.1f} MiB, "
              f"after {rss_after / 2**20:.1f} MiB (growth {(max(rss) - rss_before) / 2**20:.1f} MiB "
              f"while {total / 2**20:.0f} MiB moved)")  # fmt: skip
        if os.environ.get("BENCH_TIMELINE"):
            for t, what in timeline:
                print(f"  {t - t0:6.2f} s  {what}")
        ok = e2e >= 0.9 * cap and (t3 - t2) < 2.0 and (max(rss) - rss_before) < 20 * 2**20
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        server.terminate()
        server.wait(5)
        if sshd is not None:
            sshd.stop()
        if sandbox is not None:
            await sandbox.stop()
        await asyncio.to_thread(shutil.rmtree, work, True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
