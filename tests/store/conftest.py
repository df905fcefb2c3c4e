"""Store-room fixtures: one SeaweedFS per session, a fresh bucket and R2Store per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.store.r2 import MB, R2Store
from tests.support.seaweedfs import SeaweedFS, seaweedfs  # noqa: F401 (session fixture)

PART = 5 * MB  # S3/R2 minimum part size


@pytest.fixture(scope="session")
def shared_bucket(seaweedfs: SeaweedFS) -> str:  # noqa: F811
    """One bucket for the room's tests (each test uses its own keys): SeaweedFS spends ~0.25 s on the
    first write into every new bucket, which per-test buckets would pay ~20 times."""
    return seaweedfs.new_bucket("store")


@pytest.fixture
async def make_r2(seaweedfs: SeaweedFS, shared_bucket: str) -> AsyncIterator[Callable[..., R2Store]]:  # noqa: F811
    """Build R2Stores against the session SeaweedFS (small parts so multipart is cheap to test)."""
    made: list[R2Store] = []

    def make(**kw) -> R2Store:
        args = dict(
            bucket=kw.pop("bucket", None) or shared_bucket,
            endpoint_url=seaweedfs.endpoint,
            access_key_id=seaweedfs.access_key,
            secret_access_key=seaweedfs.secret_key,
            multipart_threshold=PART,
            part_size=PART,
            max_attempts=2,
            connect_timeout_s=5,
            read_timeout_s=30,
        )
        args.update(kw)
        store = R2Store(**args)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def r2(make_r2) -> R2Store:
    return make_r2()


def random_file(path: Path, size: int) -> Path:
    """A file of `size` random bytes, written in 1 MB blocks."""
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, MB)
            f.write(os.urandom(n))
            left -= n
    return path
