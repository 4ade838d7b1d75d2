"""How every client of the object store checks its certificate, in one place.

The STS issuer and the probe (aiohttp), the MinIO admin drivers (minio-py over urllib3) and the
RGW admin driver (rgwadmin over requests) all trust the same CAs: `object_store.ca_file` when
set (a private CA), else certifi's bundle; `verify_tls: false` turns checks off for all of them
at once, and only explicitly.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import certifi


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    verify: bool = True
    ca_file: str | None = None

    @property
    def ca_bundle(self) -> str:
        return self.ca_file or certifi.where()

    def for_aiohttp(self) -> ssl.SSLContext | bool:
        """aiohttp's `ssl=`: a context trusting ca_bundle, or False (no checks)."""
        if not self.verify:
            return False
        return ssl.create_default_context(cafile=self.ca_bundle)

    def for_urllib3(self) -> dict[str, Any]:
        """Keyword arguments of urllib3.PoolManager."""
        if not self.verify:
            return {"cert_reqs": "CERT_NONE"}
        return {"cert_reqs": "CERT_REQUIRED", "ca_certs": self.ca_bundle}

    def for_requests(self) -> bool | str:
        """requests' `verify=`: the bundle's path, or False."""
        return self.ca_bundle if self.verify else False


# Verify against certifi's bundle: what every client uses unless the config says otherwise.
VERIFIED = TlsPolicy()
