"""Vast.ai: REST client, offer ranking, the `VastProvider` lifecycle, and `comfyfleet instances`.

from app.vast import VastClient, VastProvider, open_provider
"""

from app.vast.client import VastClient
from app.vast.errors import (
    AuthError,
    CreateAmbiguous,
    InstanceFailed,
    InsufficientCredit,
    InvalidResponse,
    NoOffers,
    OfferUnavailable,
    RateLimited,
    SearchQuotaExceeded,
    VastApiError,
    VastError,
    VastTransportError,
)
from app.vast.factory import client_from_settings, open_provider
from app.vast.provider import ReconcileReport, VastProvider

__all__ = [
    "AuthError",
    "CreateAmbiguous",
    "InstanceFailed",
    "InsufficientCredit",
    "InvalidResponse",
    "NoOffers",
    "OfferUnavailable",
    "RateLimited",
    "ReconcileReport",
    "SearchQuotaExceeded",
    "VastApiError",
    "VastClient",
    "VastError",
    "VastProvider",
    "VastTransportError",
    "client_from_settings",
    "open_provider",
]
