"""Cloudflare R2 (or any S3-compatible server) through boto3.

boto3 is synchronous, so every call runs on a small private thread pool: the event loop never blocks
and a slow upload cannot starve other users of `asyncio.to_thread`. Uploads go through boto3's
transfer manager from the file path, which reads each part from disk as it is sent (multipart above
`multipart_threshold`), so memory stays at a few parts whatever the video size. `put_stream` uploads a
stream of unknown length (the model mirror copies Hub downloads straight into the bucket) the same way:
a few parts in memory, never the whole object.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from app.config import Settings
from app.errors import ConfigError
from app.redact import redact, register_secret
from app.store.base import (
    BucketMissing,
    ObjectMissing,
    StoreAuthError,
    StoredObject,
    StoreError,
    StoreUnavailable,
    validate_key,
    validate_metadata,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
MB = 1024 * 1024
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4 limit

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "Unauthorized",
    "403",
    "401",
}
_BUCKET_CODES = {"NoSuchBucket"}


def r2_endpoint(account_id: str) -> str:
    return f"https://{account_id}.r2.cloudflarestorage.com"


class R2Store:
    """`Store` on an S3 bucket. `public_base_url` set = plain URLs, else presigned GETs."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str,
        access_key_id: str,
        secret_access_key: str,
        public_base_url: str | None = None,
        presign_expiry_s: int = 3600,
        region: str = "auto",
        multipart_threshold: int = 16 * MB,
        part_size: int = 16 * MB,
        upload_concurrency: int = 4,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 5,
        workers: int = 8,
    ) -> None:
        if not bucket:
            raise ConfigError("R2_BUCKET is empty")
        if not (access_key_id and secret_access_key):
            raise ConfigError("R2 needs R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY")
        if not 1 <= presign_expiry_s <= MAX_PRESIGN_S:
            raise ConfigError(f"R2_PRESIGN_EXPIRY_S must be between 1 and {MAX_PRESIGN_S} (7 days)")
        register_secret(secret_access_key)
        register_secret(access_key_id)
        self.bucket = bucket
        self.endpoint_url = endpoint_url.rstrip("/")
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.presign_expiry_s = presign_expiry_s
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=part_size,
            max_concurrency=upload_concurrency,
            use_threads=True,
        )
        config = Config(
            signature_version="s3v4",
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"mode": "standard", "max_attempts": max_attempts},
            max_pool_connections=max(10, workers * upload_concurrency),
            # R2 (and some S3-compatibles) reject boto3>=1.36's default trailing CRC checksums on
            # some operations; only send checksums where the API requires them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="r2store")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> R2Store:
        endpoint = settings.r2_endpoint_url or (
            r2_endpoint(settings.r2_account_id) if settings.r2_account_id else None
        )
        if not endpoint:
            raise ConfigError("R2 needs R2_ACCOUNT_ID (or R2_ENDPOINT_URL for another S3 server)")
        ak = settings.r2_access_key_id.get_secret_value() if settings.r2_access_key_id else ""
        sk = settings.r2_secret_access_key.get_secret_value() if settings.r2_secret_access_key else ""
        return cls(
            bucket=settings.r2_bucket or "",
            endpoint_url=endpoint,
            access_key_id=ak,
            secret_access_key=sk,
            public_base_url=settings.r2_public_base_url,
            presign_expiry_s=settings.r2_presign_expiry_s,
            **overrides,
        )

    def __repr__(self) -> str:
        return f"R2Store(bucket={self.bucket!r}, endpoint={self.endpoint_url!r})"

    # --- Store -----------------------------------------------------------------------------------
    async def put(self, path: Path, key: str, content_type: str, metadata: dict[str, str]) -> StoredObject:
        validate_key(key)
        meta = validate_metadata(metadata)
        extra = {"ContentType": content_type, "Metadata": meta}

        def upload() -> int:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                raise ObjectMissing(f"cannot upload {path}: no such file") from None
            self._client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=self._transfer)
            return size

        try:
            size = await self._call(f"upload {key}", upload)
        except _NotFound:
            raise BucketMissing(self._bucket_missing_message()) from None
        stored = await self.head(key)
        if stored is None or stored.size != size:
            got = "nothing" if stored is None else f"{stored.size} bytes"
            raise StoreError(
                f"upload of {key} to bucket {self.bucket!r} sent {size} bytes, stored {got}", retryable=True
            )
        return stored

    async def put_stream(
        self,
        chunks: AsyncIterable[bytes],
        key: str,
        content_type: str,
        metadata: dict[str, str],
        *,
        before_complete: Callable[[], Awaitable[None] | None] | None = None,
    ) -> StoredObject:
        """Upload a stream of unknown length without holding it.

        Parts of `part_size` bytes (all equal but the last, as R2 requires) go up as they fill, at most
        `upload_concurrency` at a time, so memory stays at about (concurrency + 1) parts. `before_complete`
        runs after the last chunk and before the upload is completed; raising there (a hash mismatch)
        aborts the upload, so nothing is left under `key`. A stream shorter than one part is one PUT.
        """
        validate_key(key)
        meta = validate_metadata(metadata)
        part_size = int(self._transfer.multipart_chunksize)
        slots = asyncio.Semaphore(max(1, int(self._transfer.max_concurrency)))
        buf = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        tasks: set[asyncio.Task[None]] = set()
        number = 0

        async def send(n: int, body: bytes) -> None:
            try:
                resp = await self._call(
                    f"upload part {n} of {key}",
                    functools.partial(
                        self._client.upload_part,
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body,
                    ),
                )  # fmt: skip
                parts.append({"PartNumber": n, "ETag": resp["ETag"]})
            finally:
                slots.release()

        async def start_part(body: bytes) -> None:
            nonlocal upload_id, number
            if upload_id is None:
                resp = await self._call(
                    f"start upload of {key}",
                    functools.partial(
                        self._client.create_multipart_upload,
                        Bucket=self.bucket, Key=key, ContentType=content_type, Metadata=meta,
                    ),
                )  # fmt: skip
                upload_id = resp["UploadId"]
            await slots.acquire()
            for done in [t for t in tasks if t.done()]:  # a failed part fails the upload now
                tasks.discard(done)
                done.result()
            number += 1
            tasks.add(asyncio.create_task(send(number, body)))

        size = 0
        try:
            async for chunk in chunks:
                buf += chunk
                size += len(chunk)
                while len(buf) >= part_size:
                    with memoryview(buf) as view:
                        body = bytes(view[:part_size])  # one copy (a slice of the bytearray is another)
                    del buf[:part_size]
                    await start_part(body)
            if upload_id is None:  # smaller than one part: a single PUT
                if before_complete is not None:
                    result = before_complete()
                    if result is not None:
                        await result
                await self._call(
                    f"upload {key}",
                    functools.partial(
                        self._client.put_object,
                        Bucket=self.bucket, Key=key, Body=bytes(buf), ContentType=content_type, Metadata=meta,
                    ),
                )  # fmt: skip
            else:
                if buf:
                    await start_part(bytes(buf))
                    buf.clear()
                await asyncio.gather(*tasks)
                tasks.clear()
                if before_complete is not None:
                    result = before_complete()
                    if result is not None:
                        await result
                await self._call(
                    f"complete upload of {key}",
                    functools.partial(
                        self._client.complete_multipart_upload,
                        Bucket=self.bucket, Key=key, UploadId=upload_id,
                        MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])},
                    ),
                )  # fmt: skip
                upload_id = None
        except _NotFound:
            raise BucketMissing(self._bucket_missing_message()) from None
        finally:
            for task in tasks:
                task.cancel()
            if upload_id is not None:  # failed or cancelled: leave no parts behind (they cost storage)
                await asyncio.shield(self._abort(key, upload_id))
        stored = await self.head(key)
        if stored is None or stored.size != size:
            got = "nothing" if stored is None else f"{stored.size} bytes"
            raise StoreError(
                f"upload of {key} to bucket {self.bucket!r} sent {size} bytes, stored {got}", retryable=True
            )
        return stored

    async def _abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(Exception):
            await self._call(
                f"abort upload of {key}",
                functools.partial(
                    self._client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
            )

    async def copy(self, src: str, dst: str, content_type: str, metadata: dict[str, str]) -> StoredObject:
        """Server-side copy of `src` to `dst` with new metadata (multipart copy for large objects)."""
        validate_key(src)
        validate_key(dst)
        extra = {
            "ContentType": content_type,
            "Metadata": validate_metadata(metadata),
            "MetadataDirective": "REPLACE",
        }
        await self._call(
            f"copy {src} to {dst}",
            functools.partial(
                self._client.copy, {"Bucket": self.bucket, "Key": src}, self.bucket, dst,
                ExtraArgs=extra, Config=self._transfer,
            ),
        )  # fmt: skip
        stored = await self.head(dst)
        if stored is None:
            raise StoreError(f"copy of {src} to {dst} left nothing under {dst}", retryable=True)
        return stored

    async def head(self, key: str) -> StoredObject | None:
        validate_key(key)
        try:
            resp = await self._call(
                f"head {key}", functools.partial(self._client.head_object, Bucket=self.bucket, Key=key)
            )
        except _NotFound:
            return None
        return StoredObject(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            content_type=resp.get("ContentType", "application/octet-stream"),
            metadata=dict(resp.get("Metadata", {})),
            etag=str(resp.get("ETag", "")).strip('"'),
        )

    async def url(self, key: str) -> str:
        validate_key(key)
        if self.public_base_url:
            return f"{self.public_base_url}/{quote(key)}"
        # Presigning is local HMAC work (no network): cheap enough to do on the loop.
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.presign_expiry_s
        )

    def presign(self, key: str, expires_in_s: int) -> str:
        """A presigned GET with an explicit lifetime (tests, admin commands)."""
        validate_key(key)
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in_s
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        try:
            await self._call(
                f"delete {key}", functools.partial(self._client.delete_object, Bucket=self.bucket, Key=key)
            )
        except _NotFound:
            return

    async def get_to_file(self, key: str, dest: Path) -> int:
        """Download the object to `dest` (boto3 streams it in parts; atomically via a .part file)."""
        validate_key(key)
        tmp = dest.with_name(dest.name + ".part")

        def download() -> int:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._client.download_file(self.bucket, key, str(tmp), Config=self._transfer)
            os.replace(tmp, dest)
            return os.stat(dest).st_size

        try:
            return await self._call(f"download {key}", download)
        except _NotFound:
            raise ObjectMissing(f"{key} is not in bucket {self.bucket!r}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    # --- extras ----------------------------------------------------------------------------------
    async def check(self) -> None:
        """Fail fast with a typed error if the bucket is missing or the credentials are wrong."""
        try:
            await self._call("check bucket", functools.partial(self._client.head_bucket, Bucket=self.bucket))
        except _NotFound:
            raise BucketMissing(self._bucket_missing_message()) from None

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    # --- plumbing --------------------------------------------------------------------------------
    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn)
        except (StoreError, _NotFound):
            raise
        except Exception as exc:
            raise self._map_error(what, exc) from None

    def _bucket_missing_message(self) -> str:
        return (
            f"bucket {self.bucket!r} does not exist at {self.endpoint_url}: create it "
            "(R2 dashboard or `wrangler r2 bucket create`) or fix R2_BUCKET"
        )

    def _map_error(self, what: str, exc: Exception) -> Exception:
        client_err = _find_client_error(exc)
        if client_err is not None:
            err = client_err.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = client_err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("404", "NoSuchKey", "NotFound") and code not in _BUCKET_CODES:
                return _NotFound()
            if code in _BUCKET_CODES:
                return BucketMissing(self._bucket_missing_message())
            credential_arg = code == "InvalidArgument" and "credential" in str(err.get("Message", "")).lower()
            if code in _AUTH_CODES or status in (401, 403) or credential_arg:  # R2: malformed key id
                return StoreAuthError(
                    f"{self.endpoint_url} refused the credentials for bucket {self.bucket!r} on {what} "
                    f"({code or status}): check R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY and that the "
                    "token has Object Read & Write on this bucket"
                )
            retryable = status >= 500 or code in ("SlowDown", "RequestTimeout", "InternalError")
            cls = StoreUnavailable if retryable else StoreError
            return cls(
                redact(
                    f"{what} on bucket {self.bucket!r} failed: {code or status} "
                    f"{str(err.get('Message', ''))[:200]}"
                )
            )
        if isinstance(exc, NoCredentialsError):
            return StoreAuthError("no R2 credentials configured (R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY)")
        if isinstance(exc, BotoConnectionError | BotoCoreError | OSError):
            return StoreUnavailable(
                redact(f"{what}: cannot reach {self.endpoint_url} ({type(exc).__name__}); retry later")
            )
        return StoreError(redact(f"{what} on bucket {self.bucket!r} failed: {type(exc).__name__}"))


class _NotFound(Exception):
    """Internal: a 404 on an object (HEAD answers without a body, so no code beyond '404')."""


def _find_client_error(exc: BaseException) -> ClientError | None:
    """boto3's upload_file wraps ClientError in S3UploadFailedError (as __context__); dig it out."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ClientError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None
