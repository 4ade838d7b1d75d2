"""Fair use over HTTP: per-client rate limit, body deadline and in-flight cap (a middleware),
all in memory, per replica. Open connections and header deadlines are `credbroker serve`'s
listener (web/server.py).

On POST /v1/credentials and /v1/presign, in this order:
    rate limit    429 rate_limited + Retry-After (the caller's own bucket; unauthenticated
                  requests pass on to get their 401 from the handler)
    body          read within limits.body_timeout_seconds, else 408 request_timeout and the
                  connection is closed; any request with a body gets this deadline
    in flight     past limits.max_in_flight: 503 overloaded + Retry-After (a slow upload
                  holds no slot: the body is read first)
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from credbroker.audit import context as audit_context
from credbroker.errors import Overloaded, RateLimited, RequestTimeout
from credbroker.limits import Limits
from credbroker.observability import Metrics
from credbroker.ports import RateLimiter
from credbroker.web import callers
from credbroker.web.appkeys import CLIENT, METRICS, RUNTIME

LIMITED_ROUTES = frozenset({"/v1/credentials", "/v1/presign"})


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limits: Limits = request.app[RUNTIME].limits
    metrics = request.app[METRICS]
    resource = request.match_info.route.resource
    limited = (
        request.method == "POST" and resource is not None and (resource.canonical in LIMITED_ROUTES)
    )
    if limited:
        await _check_rate(request, limits.rate, metrics)
    if request.body_exists:
        await _read_body(request, limits.body_timeout_seconds)
    if not limited:
        return await handler(request)
    if not limits.in_flight.try_enter():
        metrics.overloaded.labels("in_flight").inc()
        raise Overloaded(
            f"the broker is at its limit of {limits.in_flight.limit} requests in flight; "
            "retry shortly"
        )
    metrics.in_flight.set(limits.in_flight.current)
    try:
        return await handler(request)
    finally:
        limits.in_flight.leave()
        metrics.in_flight.set(limits.in_flight.current)


async def _check_rate(request: web.Request, rate: RateLimiter, metrics: Metrics) -> None:
    try:
        client = await callers.authenticate(request)
    except Exception:  # only picks the bucket: the handler authenticates and answers
        return
    audit_context.CLIENT.set(client.id)  # a 429's audit record names who was limited
    request[CLIENT] = client  # the handler takes it: one token check per request
    wait = rate.try_acquire(client.id)
    if wait > 0:
        metrics.rate_limited.labels(client.id).inc()
        raise RateLimited(
            f"client {client.id} is over its rate limit; retry in {wait:.1f}s", retry_after=wait
        )


async def _read_body(request: web.Request, seconds: float) -> None:
    """Read the whole body now (aiohttp keeps it for the handler's own read)."""
    try:
        async with asyncio.timeout(seconds):
            await request.read()
    except TimeoutError:
        pass  # raised below, outside the handler: no exception chain is kept
    except ConnectionResetError:
        return  # the client hung up: the handler's own read meets it and says so
    else:
        return
    raise RequestTimeout(f"the request body did not arrive within {seconds:g}s")
