"""OIDC callers: a JWT from the organisation's identity provider (authentik, Okta, Keycloak,
Entra) instead of a static token.

Verification is PyJWT's; this module only finds the key and maps claims to a principal:

- the provider's keys (JWKS) come from `jwks_url`, or from the `jwks_uri` of its discovery
  document (`{issuer}/.well-known/openid-configuration`, whose `issuer` must be ours), fetched
  with aiohttp (never blocking the loop) through the same TLS policy as every other upstream;
- keys are cached; a token naming an unknown `kid` makes one refresh (the provider rotated),
  at most once per `min_refresh_seconds`, single-flight, so random kids cannot hammer it;
- the header's `alg` must be in the configured allow-list (asymmetric only: `none` and HS*
  are refused by the config model), and the key named by `kid` must be of that algorithm's
  type; `iss`, `aud`, `exp`, `nbf` are checked with a small leeway, `exp`, `iss`, `aud` and
  `sub` are required;
- one claim (`groups`, `policy`, or any) names the caller's groups or policies; each mapping
  whose value is among them contributes roles and spaces. Several mappings never widen one
  another: the spaces are their union but access is the lowest and the TTL the shortest among
  them (a Client has one access level for all its spaces).

Refusals are 401 `unauthenticated` whose message says why (never the token); an identity
provider that does not answer is 503 `idp_unavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from credbroker.domain import Access, Client, Role
from credbroker.errors import IdentityProviderUnavailable, Unauthenticated

log = logging.getLogger("credbroker.callers.oidc")

# Asymmetric algorithms only: a JWKS holds public keys, and an HMAC "keyed" with one is the
# classic confusion attack.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_MAX_TOKEN = 8192
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._@+=,:|-]{1,128}$")


@dataclass(frozen=True, slots=True)
class ClaimMapping:
    """One value of the mapped claim (a group or policy name) and what it grants."""

    value: str
    roles: frozenset[Role]
    spaces: frozenset[str]
    max_access: Access
    max_ttl_seconds: int


@dataclass(frozen=True, slots=True)
class OidcSettings:
    issuer: str
    audience: str
    algorithms: frozenset[str]
    claim: str
    mappings: Sequence[ClaimMapping]
    jwks_url: str | None = None
    name_claim: str = "sub"
    leeway_seconds: float = 60.0
    min_refresh_seconds: float = 30.0
    cache_seconds: float = 3600.0
    timeout_seconds: float = 3.0
    # aiohttp's ssl=: a context trusting the configured CA (wiring: objectstore.tls.TlsPolicy).
    ssl: ssl.SSLContext | bool = True


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments, the first a JSON object ("eyJ"): not one of our `cbk_`
    tokens. Only picks the checker; the verifier decides."""
    return token.startswith("eyJ") and token.count(".") == 2


class OidcAuth:
    """Verifies a bearer JWT and maps it to a Client (ports.TokenCheck-like, but async)."""

    def __init__(
        self,
        settings: OidcSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        bad = set(settings.algorithms) - ALLOWED_ALGORITHMS
        if bad or not settings.algorithms:
            raise ValueError(f"algorithms must be among {sorted(ALLOWED_ALGORITHMS)}")
        self._settings = settings
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}  # kid -> the JWK as published
        self._fetched_at: float | None = None
        self._forced_at: float | None = None  # the last refresh an unknown kid caused
        self._prepared: dict[tuple[str, str], jwt.PyJWK] = {}
        self._jwks_url: str | None = settings.jwks_url
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0  # key-set fetches so far (tests and metrics read it)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def authenticate_token(self, token: str) -> Client:
        if len(token) > _MAX_TOKEN:
            raise Unauthenticated("bearer token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._settings.algorithms:
            raise Unauthenticated(f"JWT algorithm {str(alg)[:16]!r} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise Unauthenticated("JWT names no key id (kid)")
        jwk_data = await self._key(kid)
        key = self._prepared.get((kid, alg))
        if key is None or key._jwk_data is not jwk_data:
            # Parsing a key costs about a millisecond: once per key and algorithm, not per call.
            key = self._prepared[(kid, alg)] = _usable_key(jwk_data, kid, alg)
        claims = self._decode(token, key, alg)
        return self._client(claims)

    # --- keys --------------------------------------------------------------------------------

    async def _key(self, kid: str) -> dict[str, Any]:
        if self._stale():
            await self._refresh(force=False)
        key = self._keys.get(kid)
        if key is None:
            # A new kid: the provider may have rotated. One refresh, rate-limited.
            await self._refresh(force=True)
            key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated(f"JWT key id {kid[:64]!r} is not one of the provider's keys")
        return key

    def _stale(self) -> bool:
        at = self._fetched_at
        return at is None or self._clock() - at >= self._settings.cache_seconds

    async def _refresh(self, *, force: bool) -> None:
        """`force`: a token named a kid we do not hold. Such refreshes happen at most once per
        min_refresh_seconds (the first one at once: a rotation is followed immediately), so a
        stream of random kids costs the provider one fetch per interval."""
        async with self._lock:
            now = self._clock()
            if force:
                last = self._forced_at
                if last is not None and now - last < self._settings.min_refresh_seconds:
                    return
                self._forced_at = now
            elif not self._stale():
                return  # a concurrent caller refreshed while we waited for the lock
            try:
                keys = await self._fetch_keys()
            except IdentityProviderUnavailable:
                if self._keys:
                    # Keep serving with the keys we have; try again after the refresh interval.
                    self._fetched_at = self._clock()
                    log.warning(
                        "identity provider unreachable; keeping %d cached keys", len(self._keys)
                    )
                    return
                raise
            self._keys = keys
            self._prepared = {}
            self._fetched_at = self._clock()

    async def _fetch_keys(self) -> dict[str, dict[str, Any]]:
        self.fetches += 1
        url = self._jwks_url or await self._discover()
        document = await self._get_json(url)
        raw = document.get("keys")
        if not isinstance(raw, list):
            raise IdentityProviderUnavailable("the identity provider's JWKS has no keys list")
        keys: dict[str, dict[str, Any]] = {}
        for item in raw:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            kid = item.get("kid")
            if not isinstance(kid, str) or not kid or item.get("kty") not in _FAMILIES:
                continue  # symmetric ("oct") or unknown key types are never used
            try:
                jwt.PyJWK.from_dict(item)
            except jwt.PyJWTError:
                continue  # malformed: never usable
            keys[kid] = item
        return keys

    async def _discover(self) -> str:
        issuer = self._settings.issuer.rstrip("/")
        document = await self._get_json(issuer + "/.well-known/openid-configuration")
        if str(document.get("issuer", "")).rstrip("/") != issuer:
            raise IdentityProviderUnavailable(
                "the discovery document names another issuer than oidc.issuer"
            )
        url = document.get("jwks_uri")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise IdentityProviderUnavailable("the discovery document has no jwks_uri")
        self._jwks_url = url
        return url

    async def _get_json(self, url: str) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout_seconds),
                connector=aiohttp.TCPConnector(ssl=self._settings.ssl),
            )
        where = url.split("?")[0]
        try:
            async with self._session.get(url, allow_redirects=False) as answer:
                if answer.status != 200:
                    raise IdentityProviderUnavailable(
                        f"identity provider answered {answer.status} for {where}"
                    )
                document = await answer.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            raise IdentityProviderUnavailable(
                f"identity provider unreachable or unreadable at {where}"
            ) from None
        if not isinstance(document, dict):
            raise IdentityProviderUnavailable(f"identity provider sent no JSON object at {where}")
        return document

    # --- claims -----------------------------------------------------------------------------

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        settings = self._settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("JWT has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("JWT is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("JWT is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("JWT is from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"JWT lacks the {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("JWT signature does not verify") from None
        except jwt.PyJWTError:
            raise Unauthenticated("JWT is invalid") from None
        return claims

    def _client(self, claims: Mapping[str, Any]) -> Client:
        settings = self._settings
        name = claims.get(settings.name_claim)
        if not isinstance(name, str) or not _SAFE_NAME.match(name):
            raise Unauthenticated(
                f"JWT claim {settings.name_claim} is missing or not a plain name "
                "(letters, digits and ._@+=,:|- up to 128)"
            )
        held = _claim_values(claims.get(settings.claim))
        matched = [m for m in settings.mappings if m.value in held]
        if not matched:
            raise Unauthenticated(
                f"JWT of {name} carries no {settings.claim} value this broker maps"
            )
        return Client(
            id=f"oidc:{name}",
            spaces=frozenset().union(*(m.spaces for m in matched)),
            max_access=(
                Access.READ
                if any(m.max_access is Access.READ for m in matched if m.spaces)
                else Access.WRITE
            ),
            max_ttl_seconds=min(m.max_ttl_seconds for m in matched),
            roles=frozenset().union(*(m.roles for m in matched)),
        )


def _claim_values(value: Any) -> frozenset[str]:
    """A claim holding one name, a list of names, or a comma-separated string (MinIO accepts
    `policy` as either)."""
    if isinstance(value, str):
        return frozenset(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


# Which algorithms each JWK key type may sign with. A JWK that names its `alg` signs with that
# one only; an EC key's curve is checked against the algorithm by PyJWT (ES256 needs P-256).
_FAMILIES = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}


def _usable_key(jwk_data: dict[str, Any], kid: str, alg: str) -> jwt.PyJWK:
    """The key bound to the token's (allowed) algorithm, if this key may sign with it."""
    fixed = jwk_data.get("alg")
    if (fixed is not None and fixed != alg) or alg not in _FAMILIES.get(
        str(jwk_data.get("kty")), frozenset()
    ):
        raise Unauthenticated(f"JWT key {kid[:64]!r} does not sign with {alg}")
    try:
        return jwt.PyJWK(jwk_data, algorithm=alg)
    except jwt.PyJWTError:
        raise Unauthenticated(f"JWT key {kid[:64]!r} does not sign with {alg}") from None
