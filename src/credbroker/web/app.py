"""The application factory: routes and lifecycles only. What runs is built by
wiring.runtime(), the composition root."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from credbroker import wiring
from credbroker.config import Settings
from credbroker.observability import Metrics
from credbroker.web import admin, admin_breakglass, admin_leases, admin_principals, handlers
from credbroker.web.appkeys import METRICS, RUNTIME, SETTINGS
from credbroker.web.errors import error_middleware
from credbroker.web.limits import limits_middleware


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, limits_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    # Started in this order, stopped in reverse: the scheduler and the fallback's refresh
    # stop before the runtime closes what they use.
    app.cleanup_ctx.append(_runtime)
    app.cleanup_ctx.append(admin_leases.lifecycle)
    app.cleanup_ctx.append(_fallback_refresh)
    app.cleanup_ctx.append(_rotation_scheduler)
    app.cleanup_ctx.append(_readiness_canary)
    app.cleanup_ctx.append(_compliance_scheduler)
    app.router.add_post("/v1/credentials", handlers.create_credentials)
    app.router.add_post("/v1/presign", handlers.create_presigned_url)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/openapi.json", handlers.openapi_document)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/v1/admin/rotations", admin.list_rotations)
    app.router.add_post("/v1/admin/rotations/{name}", admin.rotate)
    admin_principals.add_routes(app.router)
    admin_breakglass.add_routes(app.router)
    admin_leases.add_routes(app.router)
    return app


async def _runtime(app: web.Application) -> AsyncIterator[None]:
    async with wiring.runtime(app[SETTINGS], app[METRICS]) as runtime:
        app[RUNTIME] = runtime
        yield


async def _fallback_refresh(app: web.Application) -> AsyncIterator[None]:
    """Load the sealed read-only key, then keep it fresh in the background. Start-up never
    waits for the secret store: a broker started during an outage serves reads from the file."""
    fallback = app[RUNTIME].fallback
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


async def _rotation_scheduler(app: web.Application) -> AsyncIterator[None]:
    """Run due rotations of the broker's own keys (when configured)."""
    scheduler = app[RUNTIME].scheduler
    if scheduler is None:
        yield
        return
    await scheduler.start()
    try:
        yield
    finally:
        await scheduler.close()


async def _readiness_canary(app: web.Application) -> AsyncIterator[None]:
    """/readyz's vend canary on its schedule (stopped by the runtime's close)."""
    app[RUNTIME].readiness.start()
    yield


async def _compliance_scheduler(app: web.Application) -> AsyncIterator[None]:
    """The daily compliance check (compliance.scheduler; one replica runs it each day)."""
    daily = app[RUNTIME].compliance
    if daily is None:
        yield
        return
    await daily.start()
    try:
        yield
    finally:
        await daily.close()
