"""Typed application storage."""

from __future__ import annotations

from aiohttp import web

from credbroker.config import Settings
from credbroker.observability import Metrics
from credbroker.ports import CallerAuth, Issuer, SecretStore
from credbroker.vend import Broker

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
CALLER_AUTH = web.AppKey("caller_auth", CallerAuth)
SECRET_STORE = web.AppKey("secret_store", SecretStore)
ISSUER = web.AppKey("issuer", Issuer)
BROKER = web.AppKey("broker", Broker)
