"""Typed application storage."""

from __future__ import annotations

from aiohttp import web

from credbroker.config import Settings
from credbroker.credentials import CredentialSource
from credbroker.fallback import ReadOnlyFallback
from credbroker.observability import Metrics
from credbroker.ports import CallerAuth, Issuer, SecretStore
from credbroker.rotation.rotate import Rotator
from credbroker.vend import Broker

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
CALLER_AUTH = web.AppKey("caller_auth", CallerAuth)
SECRET_STORE = web.AppKey("secret_store", SecretStore)
ISSUER = web.AppKey("issuer", Issuer)
BROKER = web.AppKey("broker", Broker)
# Set only when a read-only fallback is configured.
FALLBACK = web.AppKey("fallback", ReadOnlyFallback)
# The service keys as the broker reads them (rotation drops its cache when it stores a key).
CREDENTIALS = web.AppKey("credentials", CredentialSource)
# Set only when rotation.credentials is not empty.
ROTATOR = web.AppKey("rotator", Rotator)
