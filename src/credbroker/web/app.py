"""The application factory: one cleanup_ctx per outside resource, typed AppKeys."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from credbroker import wiring
from credbroker.config import Settings
from credbroker.errors import CredbrokerError
from credbroker.observability import Metrics
from credbroker.rotation.scheduler import RotationScheduler
from credbroker.vend import Broker
from credbroker.web import admin, handlers
from credbroker.web.errors import error_middleware
from credbroker.web.keys import (
    BROKER,
    CALLER_AUTH,
    CREDENTIALS,
    FALLBACK,
    ISSUER,
    METRICS,
    ROTATOR,
    SECRET_STORE,
    SETTINGS,
)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=settings.server.max_body_bytes
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[CALLER_AUTH] = wiring.build_caller_auth(settings)
    app.cleanup_ctx.append(_broker)
    app.cleanup_ctx.append(_fallback_refresh)
    app.cleanup_ctx.append(_rotation)
    app.router.add_post("/v1/credentials", handlers.create_credentials)
    app.router.add_post("/v1/presign", handlers.create_presigned_url)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/v1/admin/rotations", admin.list_rotations)
    app.router.add_post("/v1/admin/rotations/{name}", admin.rotate)
    return app


async def _broker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = wiring.build_secret_store(settings, metrics=app[METRICS])
    fallback = wiring.build_fallback(settings, store, app[METRICS])
    issuer = wiring.build_issuer(settings)
    audit = wiring.build_audit(settings)
    app[SECRET_STORE] = store
    app[ISSUER] = issuer
    if fallback is not None:
        app[FALLBACK] = fallback
    app[CREDENTIALS] = wiring.build_credentials(settings, store)
    app[BROKER] = Broker(
        spaces=wiring.space_targets(settings),
        ttl=wiring.ttl_limits(settings),
        credentials=app[CREDENTIALS],
        issuer=issuer,
        audit=audit,
        metrics=app[METRICS],
        flavor=settings.object_store.flavor,
        fallback=fallback,
        clock_skew_seconds=settings.object_store.clock_skew_seconds,
    )
    try:
        yield
    finally:
        await issuer.close()
        await store.close()
        await audit.close()


async def _fallback_refresh(app: web.Application) -> AsyncIterator[None]:
    """Load the sealed read-only key, then keep it fresh in the background. Start-up never
    waits for the secret store: a broker started during an outage serves reads from the file."""
    fallback = app.get(FALLBACK)
    if fallback is None:
        yield
        return
    await asyncio.to_thread(fallback.load_cache)
    task = asyncio.create_task(fallback.keep_fresh(), name="credbroker-fallback-refresh")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _rotation(app: web.Application) -> AsyncIterator[None]:
    """Rotation of the broker's own keys (if configured): the Rotator for the admin API, and
    the scheduler that runs due rotations. Closed before the store and issuer it uses."""
    settings = app[SETTINGS]
    if not settings.rotation.credentials:
        yield
        return

    async def switched(path: str) -> None:
        if path == settings.object_store.credentials_path:
            app[CREDENTIALS].invalidate()
        fallback = app.get(FALLBACK)
        if fallback is not None and path == _fallback_path(settings):
            with contextlib.suppress(CredbrokerError):
                await fallback.refresh()  # the sealed copy follows the new key now

    audit = wiring.build_audit(settings)
    try:
        async with wiring.rotation(
            settings,
            store=app[SECRET_STORE],
            issuer=app[ISSUER],
            metrics=app[METRICS],
            audit=audit,
            on_switch=switched,
        ) as rotator:
            app[ROTATOR] = rotator
            scheduler = None
            if settings.rotation.scheduler:
                scheduler = RotationScheduler(
                    rotator, resync_seconds=settings.rotation.resync_seconds
                )
            try:
                if scheduler is not None:
                    await scheduler.start()
                yield
            finally:
                if scheduler is not None:
                    await scheduler.close()
    finally:
        await audit.close()


def _fallback_path(settings: Settings) -> str | None:
    return settings.fallback.credentials_path if settings.fallback is not None else None
