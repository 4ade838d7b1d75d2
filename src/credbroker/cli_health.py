"""`credbroker health`: the container's (or a supervisor's) liveness probe, from the config.

It asks the broker on this host, at the configured port, the way the config says it listens:
plain HTTP, or HTTPS. The probe runs on the broker's own host over loopback and sends no
credential, so over HTTPS it does not check the server certificate's name (the certificate is
issued for the service's public name, not 127.0.0.1). When the listener requires client
certificates, /healthz cannot be reached without one: a completed TLS handshake up to the
server's certificate is then what "alive" means (the broker's own TLS layer answered).

Exit status: 0 alive (or, with --ready, ready), 1 not.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from credbroker.config import load_settings

_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - mapping only


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser("health", help="probe the broker on this host (liveness; --ready: /readyz)")
    config_arg(p)
    p.add_argument("--ready", action="store_true", help="ask /readyz: ready (or degraded)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    p.set_defaults(func=_health)


def _health(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config))
    host = _WILDCARD.get(settings.server.host, settings.server.host)
    port = settings.server.port
    tls = settings.server.tls
    path = "/readyz" if args.ready else "/healthz"
    context: ssl.SSLContext | None = None
    if tls is not None:
        context = ssl.create_default_context()
        context.check_hostname = False  # loopback, no credential sent (module docstring)
        context.verify_mode = ssl.CERT_NONE
        if tls.client_certs == "required" and not args.ready:
            return _handshake(host, port, context, args.timeout)
    try:
        if context is None:
            connection: http.client.HTTPConnection = http.client.HTTPConnection(
                host, port, timeout=args.timeout
            )
        else:
            connection = http.client.HTTPSConnection(
                host, port, timeout=args.timeout, context=context
            )
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
    except (OSError, http.client.HTTPException) as exc:
        print(f"credbroker health: {path} unreachable: {type(exc).__name__}")
        return 1
    status = _status(body)
    print(f"credbroker health: {path} {answer.status} {status}")
    return 0 if answer.status == 200 else 1


def _handshake(host: str, port: int, context: ssl.SSLContext, timeout: float) -> int:
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            # Without a client certificate the server ends the handshake after sending its
            # own: getting that far proves the listener and its TLS layer answer.
            try:
                with context.wrap_socket(raw, do_handshake_on_connect=False) as wrapped:
                    wrapped.do_handshake()
            except ssl.SSLError:
                pass  # refused for want of a client certificate: it answered
    except OSError as exc:
        print(f"credbroker health: TLS listener unreachable: {type(exc).__name__}")
        return 1
    print("credbroker health: TLS listener answered (client certificates required)")
    return 0


def _status(body: bytes) -> str:
    try:
        value = json.loads(body).get("status", "")
    except (ValueError, AttributeError):
        return ""
    return str(value)
