"""An OpenID provider for tests: discovery document and JWKS over real HTTP, real RSA and EC
keys, tokens signed with PyJWT. Rotation is adding a key (new kid) and retiring one.

    GET /.well-known/openid-configuration   {"issuer", "jwks_uri", ...} as authentik, Keycloak,
                                            Okta and Entra publish it
    GET /jwks                               {"keys": [public JWKs with kid, use, alg]}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

AUDIENCE = "credbroker"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    published: bool = True

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


class OidcProvider:
    def __init__(self) -> None:
        self.keys: dict[str, SigningKey] = {}
        self.requests: dict[str, int] = {"discovery": 0, "jwks": 0}
        self.down = False  # answer 503 to everything
        self.advertised_issuer: str | None = None  # the discovery document names another
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- keys and tokens ---------------------------------------------------------------------

    def add_key(self, kind: str = "RSA", *, kid: str | None = None, publish: bool = True) -> str:
        if kind == "RSA":
            private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            alg = "RS256"
        else:
            private = ec.generate_private_key(ec.SECP256R1())
            alg = "ES256"
        kid = kid or f"{kind.lower()}-{len(self.keys) + 1}"
        self.keys[kid] = SigningKey(kid, alg, private, publish)
        return kid

    def retire(self, kid: str) -> None:
        self.keys[kid].published = False

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "groups": ["eng-readers"],
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, kid: str, *, alg: str | None = None, **claims: Any) -> str:
        key = self.keys[kid]
        return jwt.encode(
            self.claims(**claims), key.private, algorithm=alg or key.alg, headers={"kid": kid}
        )

    def unsigned_token(self, kid: str, **claims: Any) -> str:
        """`alg: none`, no signature: the oldest attack."""
        return (
            _b64(json.dumps({"alg": "none", "kid": kid, "typ": "JWT"}))
            + "."
            + (_b64(json.dumps(self.claims(**claims))))
            + "."
        )

    def hs256_with_public_key(self, kid: str, **claims: Any) -> str:
        """HS256 "keyed" with the provider's public key (PEM), which anyone can download: the
        algorithm-confusion attack."""
        head = _b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}))
        body = _b64(json.dumps(self.claims(**claims)))
        mac = hmac.new(
            self.keys[kid].public_pem(), f"{head}.{body}".encode(), hashlib.sha256
        ).digest()
        return f"{head}.{body}.{_b64(mac)}"

    # --- HTTP -------------------------------------------------------------------------------

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> str:
        """Serve on a free loopback port; over HTTPS with `ssl_context`."""
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _discovery(self, request: web.Request) -> web.Response:
        self.requests["discovery"] += 1
        if self.down:
            return web.Response(status=503)
        return web.json_response(
            {
                "issuer": self.advertised_issuer or self.url,
                "jwks_uri": self.url + "/jwks",
                "authorization_endpoint": self.url + "/authorize",
                "token_endpoint": self.url + "/token",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "subject_types_supported": ["public"],
                "response_types_supported": ["code"],
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.requests["jwks"] += 1
        if self.down:
            return web.Response(status=503)
        keys = [k.public_jwk() for k in self.keys.values() if k.published]
        return web.json_response({"keys": keys})


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
