"""OIDC callers against a local provider with real RSA and EC keys (tests/doubles): valid
tokens map to their claims; every listed attack is refused; a key rotation at the provider is
followed without a restart, and random kids cannot make the broker hammer the provider."""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from credbroker.callers.composite import CallerAuthChain
from credbroker.callers.oidc import ClaimMapping, OidcAuth, OidcSettings
from credbroker.callers.tokens import TokenAuth, new_token
from credbroker.domain import Access, CallerProof, Client, Role
from credbroker.errors import IdentityProviderUnavailable, Unauthenticated
from tests.doubles.oidc_provider import AUDIENCE, OidcProvider
from tests.fakes import MonotonicClock
from tests.tls_certs import TestCa

MAPPINGS = [
    ClaimMapping("eng-readers", frozenset({Role.RULE}), frozenset({"ENG"}), Access.READ, 900),
    ClaimMapping("ops-writers", frozenset({Role.RULE}), frozenset({"OPS"}), Access.WRITE, 3600),
    ClaimMapping("approvers", frozenset({Role.APPROVER}), frozenset(), Access.READ, 900),
]


@pytest.fixture
async def provider() -> AsyncIterator[OidcProvider]:
    idp = OidcProvider()
    await idp.start()
    idp.add_key("RSA", kid="rsa-1")
    idp.add_key("EC", kid="ec-1")
    yield idp
    await idp.close()


def settings(provider: OidcProvider, **overrides: object) -> OidcSettings:
    values: dict[str, object] = {
        "issuer": provider.url,
        "audience": AUDIENCE,
        "algorithms": frozenset({"RS256", "ES256"}),
        "claim": "groups",
        "mappings": MAPPINGS,
        "leeway_seconds": 60,
        "min_refresh_seconds": 30,
        "cache_seconds": 3600,
    }
    values.update(overrides)
    return OidcSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def auth(provider: OidcProvider) -> AsyncIterator[OidcAuth]:
    verifier = OidcAuth(settings(provider))
    yield verifier
    await verifier.close()


async def refused(auth: OidcAuth, token: str, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason) as info:
        await auth.authenticate_token(token)
    assert info.value.status == 401
    assert token not in info.value.message


# --- what a valid token gets --------------------------------------------------------------


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
async def test_a_valid_token_of_either_key_type_maps_to_its_claims(
    provider: OidcProvider, auth: OidcAuth, kid: str
) -> None:
    client = await auth.authenticate_token(provider.token(kid, sub="alice"))
    assert client == Client(
        id="oidc:alice",
        spaces=frozenset({"ENG"}),
        max_access=Access.READ,
        max_ttl_seconds=900,
        roles=frozenset({Role.RULE}),
    )


async def test_discovery_finds_the_key_set(provider: OidcProvider, auth: OidcAuth) -> None:
    await auth.authenticate_token(provider.token("rsa-1"))
    assert provider.requests == {"discovery": 1, "jwks": 1}


async def test_a_configured_jwks_url_skips_discovery(provider: OidcProvider) -> None:
    auth = OidcAuth(settings(provider, jwks_url=provider.url + "/jwks"))
    try:
        await auth.authenticate_token(provider.token("ec-1"))
    finally:
        await auth.close()
    assert provider.requests == {"discovery": 0, "jwks": 1}


async def test_the_mapped_claim_may_be_a_comma_separated_policy(provider: OidcProvider) -> None:
    """MinIO's convention: a `policy` claim holding names separated by commas."""
    auth = OidcAuth(settings(provider, claim="policy"))
    try:
        client = await auth.authenticate_token(
            provider.token("rsa-1", groups=None, policy="ops-writers,approvers")
        )
    finally:
        await auth.close()
    assert client.spaces == {"OPS"} and client.max_access is Access.WRITE
    assert client.roles == {Role.RULE, Role.APPROVER}


async def test_several_mappings_never_widen_one_another(
    provider: OidcProvider, auth: OidcAuth
) -> None:
    """Write in OPS and read in ENG must not become write in ENG: one access level for all
    spaces, the lowest, and the shortest TTL."""
    client = await auth.authenticate_token(
        provider.token("rsa-1", groups=["eng-readers", "ops-writers"])
    )
    assert client.spaces == {"ENG", "OPS"}
    assert client.max_access is Access.READ and client.max_ttl_seconds == 900


async def test_an_approver_carries_the_persons_name(provider: OidcProvider) -> None:
    auth = OidcAuth(settings(provider, name_claim="preferred_username"))
    try:
        client = await auth.authenticate_token(
            provider.token("ec-1", preferred_username="j.doe@example.org", groups=["approvers"])
        )
    finally:
        await auth.close()
    assert client.id == "oidc:j.doe@example.org" and client.has_role(Role.APPROVER)


async def test_no_mapped_group_is_refused(provider: OidcProvider, auth: OidcAuth) -> None:
    await refused(auth, provider.token("rsa-1", groups=["marketing"]), "no groups value")


async def test_a_subject_that_is_not_a_plain_name_is_refused(
    provider: OidcProvider, auth: OidcAuth
) -> None:
    await refused(auth, provider.token("rsa-1", sub="alice\nforged"), "not a plain name")


# --- attacks --------------------------------------------------------------------------------


async def test_alg_none_is_refused(provider: OidcProvider, auth: OidcAuth) -> None:
    await refused(auth, provider.unsigned_token("rsa-1"), "algorithm 'none' is not allowed")


async def test_hs256_keyed_with_the_public_key_is_refused(
    provider: OidcProvider, auth: OidcAuth
) -> None:
    await refused(auth, provider.hs256_with_public_key("rsa-1"), "'HS256' is not allowed")


async def test_hs256_is_refused_even_if_a_verifier_were_told_to_allow_it(
    provider: OidcProvider,
) -> None:
    with pytest.raises(ValueError, match="algorithms must be among"):
        OidcAuth(settings(provider, algorithms=frozenset({"RS256", "HS256"})))


async def test_an_allowed_algorithm_with_a_key_of_another_type_is_refused(
    provider: OidcProvider, auth: OidcAuth
) -> None:
    """An ES256 token (signed by the EC key) naming the RSA key's kid, and the other way."""
    import jwt

    claims = provider.claims()
    ec_key, rsa_key = provider.keys["ec-1"].private, provider.keys["rsa-1"].private
    forged = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
    await refused(auth, forged, "does not sign with ES256")
    forged = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
    await refused(auth, forged, "does not sign with RS256")


async def test_an_algorithm_outside_the_allow_list_is_refused(
    provider: OidcProvider, auth: OidcAuth
) -> None:
    await refused(auth, provider.token("rsa-1", alg="RS512"), "'RS512' is not allowed")
    await refused(auth, provider.token("rsa-1", alg="PS256"), "'PS256' is not allowed")


async def test_a_key_published_for_one_algorithm_is_not_used_with_another(
    provider: OidcProvider,
) -> None:
    auth = OidcAuth(settings(provider, algorithms=frozenset({"RS256", "PS256"})))
    try:
        await refused(auth, provider.token("rsa-1", alg="PS256"), "does not sign with PS256")
    finally:
        await auth.close()


async def test_a_bad_signature_is_refused(provider: OidcProvider, auth: OidcAuth) -> None:
    token = provider.token("rsa-1")
    other = provider.token("rsa-1", sub="mallory")
    await refused(auth, ".".join([*other.split(".")[:2], token.split(".")[2]]), "does not verify")


async def test_an_unknown_kid_is_refused(provider: OidcProvider, auth: OidcAuth) -> None:
    provider.add_key("RSA", kid="attacker", publish=False)
    await refused(auth, provider.token("attacker"), "not one of the provider's keys")


async def test_a_token_without_kid_is_refused(provider: OidcProvider, auth: OidcAuth) -> None:
    import jwt

    token = jwt.encode(provider.claims(), provider.keys["rsa-1"].private, algorithm="RS256")
    await refused(auth, token, "no key id")


async def test_expired_is_refused_but_a_small_skew_is_tolerated(
    provider: OidcProvider, auth: OidcAuth
) -> None:
    now = int(time.time())
    await refused(auth, provider.token("rsa-1", exp=now - 120), "expired")
    assert (await auth.authenticate_token(provider.token("rsa-1", exp=now - 30))).id


async def test_not_yet_valid_is_refused(provider: OidcProvider, auth: OidcAuth) -> None:
    now = int(time.time())
    await refused(auth, provider.token("ec-1", nbf=now + 600, iat=now), "not valid yet")
    assert await auth.authenticate_token(provider.token("ec-1", nbf=now + 30))


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"aud": "someone-else"}, "another audience"),
        ({"exp": None}, "lacks the exp claim"),
        ({"aud": None}, "lacks the aud claim"),
        ({"sub": None}, "lacks the sub claim"),
    ],
)
async def test_issuer_audience_and_required_claims(
    provider: OidcProvider, auth: OidcAuth, claims: dict[str, Any], reason: str
) -> None:
    await refused(auth, provider.token("rsa-1", **claims), reason)


async def test_garbage_is_refused(auth: OidcAuth) -> None:
    await refused(auth, "eyJ.not.ajwt", "not a well-formed JWT")
    await refused(auth, "eyJ" + "a" * 9000 + ".b.c", "too long")


# --- keys over time -------------------------------------------------------------------------


async def test_a_rotation_at_the_provider_is_followed_without_restart(
    provider: OidcProvider, auth: OidcAuth
) -> None:
    clock = MonotonicClock()
    auth = OidcAuth(settings(provider), clock=clock)
    try:
        assert await auth.authenticate_token(provider.token("rsa-1"))
        provider.add_key("RSA", kid="rsa-2")  # the provider rotates, moments later
        provider.retire("rsa-1")
        assert (await auth.authenticate_token(provider.token("rsa-2"))).id == "oidc:alice"
        assert provider.requests["jwks"] == 2
        # The retired key is still cached until the cache expires (at most cache_seconds) ...
        clock.advance(3600)
        await refused(auth, provider.token("rsa-1"), "not one of the provider's keys")
    finally:
        await auth.close()


async def test_random_kids_cannot_hammer_the_provider(provider: OidcProvider) -> None:
    clock = MonotonicClock()
    auth = OidcAuth(settings(provider), clock=clock)
    try:
        await auth.authenticate_token(provider.token("rsa-1"))
        for _ in range(50):
            kid = secrets.token_hex(8)
            provider.add_key("EC", kid=kid, publish=False)
            await refused(auth, provider.token(kid), "not one of the provider's keys")
        # The first unknown kid refreshed at once; the other 49 within the floor did not.
        assert provider.requests["jwks"] == 2
        clock.advance(31)
        await refused(auth, provider.token(kid), "not one of the provider's keys")
        assert provider.requests["jwks"] == 3  # one more, not 51
    finally:
        await auth.close()


async def test_a_provider_that_is_down_at_first_use_is_503(provider: OidcProvider) -> None:
    provider.down = True
    auth = OidcAuth(settings(provider))
    try:
        with pytest.raises(IdentityProviderUnavailable) as info:
            await auth.authenticate_token(provider.token("rsa-1"))
        assert (info.value.status, info.value.code) == (503, "idp_unavailable")
    finally:
        await auth.close()


async def test_cached_keys_keep_serving_while_the_provider_is_down(
    provider: OidcProvider,
) -> None:
    clock = MonotonicClock()
    auth = OidcAuth(settings(provider), clock=clock)
    try:
        await auth.authenticate_token(provider.token("rsa-1"))
        provider.down = True
        clock.advance(4000)  # the cache is stale: a refresh fails, the keys stay
        assert await auth.authenticate_token(provider.token("ec-1"))
    finally:
        await auth.close()


async def test_a_discovery_document_naming_another_issuer_is_refused(
    provider: OidcProvider,
) -> None:
    provider.advertised_issuer = "https://idp.evil.example"
    auth = OidcAuth(settings(provider))
    try:
        with pytest.raises(IdentityProviderUnavailable, match="another issuer"):
            await auth.authenticate_token(provider.token("rsa-1"))
    finally:
        await auth.close()


# --- beside static tokens ---------------------------------------------------------------------


async def test_static_tokens_and_jwts_side_by_side(provider: OidcProvider, auth: OidcAuth) -> None:
    token, digest = new_token()
    rule = Client("static-rule", frozenset({"ENG"}), Access.WRITE, 900)
    chain = CallerAuthChain(TokenAuth([(digest, rule)]), oidc=auth)
    assert await chain.authenticate(CallerProof(f"Bearer {token}")) is rule
    jwt_client = await chain.authenticate(CallerProof(f"Bearer {provider.token('ec-1')}"))
    assert jwt_client.id == "oidc:alice"
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        await chain.authenticate(CallerProof("Bearer cbk_wrong"))


async def test_without_oidc_a_jwt_is_just_an_unknown_token(provider: OidcProvider) -> None:
    chain = CallerAuthChain(TokenAuth([]))
    with pytest.raises(Unauthenticated, match=r"unknown or revoked|Bearer <token>"):
        await chain.authenticate(CallerProof(f"Bearer {provider.token('rsa-1')}"))
    assert provider.requests["jwks"] == 0


# --- the provider over HTTPS: pinned to the configured CA -----------------------------------------


async def test_the_key_set_is_fetched_only_from_a_provider_the_configured_ca_signed(
    tmp_path: Path,
) -> None:
    from credbroker.config import Settings
    from credbroker.wiring import build_oidc

    ca = TestCa(tmp_path)
    issued = ca.issue("idp", "idp.test", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(issued.cert), str(issued.key))
    idp = OidcProvider()
    await idp.start(ssl_context=context)
    idp.add_key("EC", kid="ec-1")
    base = {
        "object_store": {"endpoint": "http://127.0.0.1:9"},
        "spaces": {"ENG": {"bucket": "cb-main", "prefix": "ENG/"}},
    }
    oidc = {"issuer": idp.url, "audience": AUDIENCE, "mappings": [{"value": "eng-readers"}]}
    pinned = build_oidc(
        Settings.model_validate({**base, "oidc": {**oidc, "ca_file": str(ca.cert_file)}})
    )
    public = build_oidc(Settings.model_validate({**base, "oidc": oidc}))  # certifi's CAs only
    assert pinned is not None and public is not None
    try:
        assert (await pinned.authenticate_token(idp.token("ec-1"))).id == "oidc:alice"
        with pytest.raises(IdentityProviderUnavailable, match="unreachable or unreadable"):
            await public.authenticate_token(idp.token("ec-1"))
    finally:
        await pinned.close()
        await public.close()
        await idp.close()
