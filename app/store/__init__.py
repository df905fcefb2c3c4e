"""Result storage (R2 or a local directory) and the content-addressed result cache."""

from app.store.base import (
    BucketMissing,
    InvalidKey,
    ObjectMissing,
    Store,
    StoreAuthError,
    StoredObject,
    StoreError,
    StoreUnavailable,
    validate_key,
)
from app.store.cache import (
    CachedResult,
    ResultCache,
    ResultManifest,
    cache_key,
    image_sha256,
    index_key,
    last_frame_key,
    manifest_key,
    seedless_key,
    video_key,
)
from app.store.factory import make_store
from app.store.local import LocalStore
from app.store.r2 import R2Store
from app.store.routes import local_files_router

__all__ = [
    "BucketMissing",
    "CachedResult",
    "InvalidKey",
    "LocalStore",
    "ObjectMissing",
    "R2Store",
    "ResultCache",
    "ResultManifest",
    "Store",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailable",
    "StoredObject",
    "cache_key",
    "image_sha256",
    "index_key",
    "last_frame_key",
    "local_files_router",
    "make_store",
    "manifest_key",
    "seedless_key",
    "validate_key",
    "video_key",
]
