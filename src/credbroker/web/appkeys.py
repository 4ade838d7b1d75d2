"""Typed application storage (aiohttp AppKeys)."""

from __future__ import annotations

from aiohttp import web

from credbroker.config import Settings
from credbroker.domain import Client
from credbroker.observability import Metrics
from credbroker.wiring import Runtime

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
# Set once the app has started (cleanup_ctx); every handler reads its objects from here.
RUNTIME = web.AppKey("runtime", Runtime)
# The client the rate limiter authenticated: the handler takes it rather than checking the
# token a second time.
CLIENT = web.RequestKey("client", Client)
