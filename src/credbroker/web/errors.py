"""One middleware turns every failure into {"error": {"code", "message"}}, counted and logged."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.typedefs import Handler

from credbroker.audit import context as audit_context
from credbroker.errors import CredbrokerError, UpstreamError
from credbroker.web.appkeys import METRICS, RUNTIME

log = logging.getLogger("credbroker.web")

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


DEFAULT_RETRY_AFTER = 5


class ClientGone(Exception):
    """The client hung up before its request body ended: nobody to answer, nothing broken."""


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: float | None = None,
    retry_after_header: bool = True,
) -> web.Response:
    response = web.json_response({"error": {"code": code, "message": message}}, status=status)
    if status in (429, 503) and retry_after_header:
        # The limiter's or the breaker's own next-try time when known, in whole seconds (1-60).
        seconds = DEFAULT_RETRY_AFTER if retry_after is None else math.ceil(retry_after)
        response.headers["Retry-After"] = str(min(60, max(1, seconds)))
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    route = (
        request.match_info.route.resource.canonical if request.match_info.route.resource else "-"
    )
    started = time.perf_counter()
    outcome = "ok"
    # Every audit record written while this request is served names the caller's address.
    source = audit_context.SOURCE.set(request.remote)
    client = audit_context.CLIENT.set(None)
    try:
        return await handler(request)
    except CredbrokerError as exc:
        outcome = exc.code
        if isinstance(exc, UpstreamError):
            metrics.upstream_failures.labels(exc.upstream, exc.code).inc()
            log.warning("%s %s: %s (%s)", request.method, route, exc.message, exc.code)
        if not exc.audited:
            await _audit_refusal(request, route, exc.status, exc.code)
        response = error_response(
            exc.status,
            exc.code,
            exc.message,
            retry_after=exc.retry_after,
            retry_after_header=exc.retry_after_header,
        )
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="credbroker"'  # RFC 6750
        return response
    except ClientGone:
        outcome = "client_disconnected"
        log.info("%s %s: the client hung up before the body ended", request.method, route)
        await _audit_refusal(request, route, 400, outcome)
        return error_response(400, outcome, "the connection closed before the body ended")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        outcome = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        await _audit_refusal(request, route, exc.status, outcome)
        response = error_response(exc.status, outcome, exc.reason)
        if "Allow" in exc.headers:  # 405 must say which methods are allowed (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:  # the server shutting down, or a cancelling test server
        outcome = "cancelled"
        raise
    except Exception:
        outcome = "internal_error"
        log.exception("unhandled error on %s %s", request.method, route)
        return error_response(500, "internal_error", "internal error; see the broker's log")
    finally:
        metrics.requests.labels(route, outcome).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        audit_context.CLIENT.reset(client)
        audit_context.SOURCE.reset(source)


async def _audit_refusal(request: web.Request, route: str, status: int, code: str) -> None:
    """One record per refused API call the use cases did not record themselves (401, admin
    403, malformed bodies, 429, upstream failures, ...). Health, metrics and the API document
    are not decisions. Never fails the answer: an audit sink that fails is logged."""
    if not request.path.startswith("/v1/"):
        return
    runtime = request.app.get(RUNTIME)
    if runtime is None:
        return
    event = {
        "ts": datetime.now(UTC).isoformat(),
        "event": "refused",
        "method": request.method,
        "route": route,
        "status": status,
        "code": code,
    }
    try:
        await runtime.audit.record(event)
    except Exception as exc:  # the answer still goes out; the failure is visible in the log
        log.error("audit record of a refusal failed: %s", type(exc).__name__)
