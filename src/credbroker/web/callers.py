"""Who is asking: the request's Authorization header and the client certificate its TLS
connection was verified with, handed to ports.CallerAuth."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from credbroker.domain import CallerProof, Client, PeerCertificate
from credbroker.web.appkeys import RUNTIME


def proof(request: web.Request) -> CallerProof:
    return CallerProof(authorization=request.headers.get("Authorization"), peer=peer(request))


async def authenticate(request: web.Request) -> Client:
    return await request.app[RUNTIME].caller_auth.authenticate(proof(request))


def peer(request: web.Request) -> PeerCertificate | None:
    """The verified client certificate (ssl's getpeercert() form), or None: plain HTTP, no
    certificate sent, or one the handshake did not verify."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    return from_getpeercert(cert)


def from_getpeercert(cert: dict[str, Any]) -> PeerCertificate:
    cn = None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                cn = value
    sans: dict[str, list[str]] = {"DNS": [], "URI": [], "email": []}
    for kind, value in cert.get("subjectAltName", ()):
        if kind in sans:
            sans[kind].append(value)
    return PeerCertificate(
        subject_cn=cn,
        dns_names=tuple(sans["DNS"]),
        uris=tuple(sans["URI"]),
        emails=tuple(sans["email"]),
    )
