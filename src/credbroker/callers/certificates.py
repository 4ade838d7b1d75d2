"""Client certificates (mTLS): a certificate the TLS handshake verified against
`server.tls.client_ca_file` names a client by its subject common name or one of its subject
alternative names (DNS, URI, email), for rules behind a gateway that holds a certificate
rather than a token. Exact matches only; an unmapped certificate is refused (401)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from credbroker.domain import Client, PeerCertificate

Field = Literal["cn", "dns", "uri", "email"]


@dataclass(frozen=True, slots=True)
class CertificateRule:
    field: Field
    value: str
    client: Client


class CertificateAuth:
    def __init__(self, rules: Iterable[CertificateRule]) -> None:
        self._rules = list(rules)

    def client_for(self, peer: PeerCertificate) -> Client | None:
        """The client of the first rule the certificate matches, or None."""
        for rule in self._rules:
            if rule.value in _values(peer, rule.field):
                return rule.client
        return None


def _values(peer: PeerCertificate, field: Field) -> tuple[str, ...]:
    if field == "cn":
        return (peer.subject_cn,) if peer.subject_cn is not None else ()
    if field == "dns":
        return peer.dns_names
    if field == "uri":
        return peer.uris
    return peer.emails
