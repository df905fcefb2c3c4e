"""Batched file operations: one thread hop for many callers must still give each caller its own outcome."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.store.fileops import FileOps


async def test_failing_operation_reaches_only_its_caller(tmp_path):
    ops = FileOps()
    threads: set[int] = set()

    def touch(name: str) -> str:
        threads.add(threading.get_ident())
        (tmp_path / name).write_text(name)
        return name

    results = await asyncio.gather(
        ops.run(touch, "a"),
        ops.run((tmp_path / "missing").read_text),
        ops.run(touch, "b"),
        return_exceptions=True,
    )

    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], FileNotFoundError)
    assert threads and threading.get_ident() not in threads  # off the event loop
    assert len(threads) == 1  # the three calls of one tick shared a single hop


async def test_cancelled_caller_does_not_break_the_batch(tmp_path):
    ops = FileOps()
    cancelled = asyncio.ensure_future(ops.run((tmp_path / "x").write_text, "x"))
    kept = asyncio.ensure_future(ops.run((tmp_path / "y").write_text, "y"))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert await kept == 1
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert (tmp_path / "x").read_text() == "x"  # the operation itself still ran
