"""The application factory: one cleanup_ctx per outside resource, typed AppKeys."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from credbroker import wiring
from credbroker.config import Settings
from credbroker.credentials import CredentialSource
from credbroker.observability import Metrics
from credbroker.vend import Broker
from credbroker.web import handlers
from credbroker.web.errors import error_middleware
from credbroker.web.keys import BROKER, CALLER_AUTH, ISSUER, METRICS, SECRET_STORE, SETTINGS


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=settings.server.max_body_bytes
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[CALLER_AUTH] = wiring.build_caller_auth(settings)
    app.cleanup_ctx.append(_broker)
    app.router.add_post("/v1/credentials", handlers.create_credentials)
    app.router.add_post("/v1/presign", handlers.create_presigned_url)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    return app


async def _broker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = wiring.build_secret_store(settings)
    issuer = wiring.build_issuer(settings)
    audit = wiring.build_audit(settings)
    app[SECRET_STORE] = store
    app[ISSUER] = issuer
    app[BROKER] = Broker(
        spaces=wiring.space_targets(settings),
        ttl=wiring.ttl_limits(settings),
        credentials=CredentialSource(
            store,
            settings.object_store.credentials_path,
            cache_seconds=settings.secret_cache_seconds,
        ),
        issuer=issuer,
        audit=audit,
        metrics=app[METRICS],
    )
    try:
        yield
    finally:
        await issuer.close()
        await store.close()
        await audit.close()
