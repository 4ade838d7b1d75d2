"""The identity settings (`oidc:`, `confluence:`, `server.tls:`, per-space actor_check) refuse
what cannot be safe or cannot work, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from credbroker.config import Settings
from credbroker.domain import SpaceTarget

BASE: dict[str, Any] = {
    "object_store": {
        "flavor": "rgw",
        "endpoint": "https://s3.example.internal",
        "role_arn": "arn:aws:iam:::role/credbroker-vend",
    },
    "spaces": {"ENG": {"bucket": "confluence-exports", "prefix": "ENG/"}},
    "clients": [{"id": "gateway", "token_sha256": "c" * 64, "spaces": ["ENG"]}],
}
OIDC = {
    "issuer": "https://idp.example.org/application/o/credbroker/",
    "audience": "credbroker",
    "mappings": [{"value": "eng", "spaces": ["ENG"]}],
}
CONFLUENCE = {"url": "https://wiki.atlassian.net", "credentials_path": "credbroker/confluence"}
TLS = {"cert_file": "/etc/credbroker/tls/server.crt", "key_file": "/etc/credbroker/tls/server.key"}


def settings(**changes: Any) -> Settings:
    return Settings.model_validate({**BASE, **changes})


def refused(message: str, **changes: Any) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**changes)


def test_a_full_identity_configuration_validates() -> None:
    valid = settings(
        oidc={**OIDC, "algorithms": ["RS256", "ES256", "PS256", "EdDSA"], "claim": "policy"},
        confluence=CONFLUENCE,
        server={
            "tls": {
                **TLS,
                "client_certs": "optional",
                "client_ca_file": "/etc/credbroker/tls/clients-ca.pem",
                "client_certificates": [{"cn": "gateway-1", "client": "gateway"}],
            }
        },
        spaces={
            "ENG": {"bucket": "confluence-exports", "prefix": "ENG", "actor_check": "confluence"}
        },
    )
    assert valid.spaces["ENG"] == SpaceTarget("confluence-exports", "ENG/", "confluence")
    assert valid.oidc is not None and valid.oidc.clock_skew_seconds == 60


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "hs256", "RS1"])
def test_symmetric_or_unknown_algorithms_are_refused(alg: str) -> None:
    refused("never none or HS", oidc={**OIDC, "algorithms": ["RS256", alg]})


def test_a_mapping_naming_an_unknown_space_is_refused() -> None:
    refused(
        "names unknown spaces: OPS", oidc={**OIDC, "mappings": [{"value": "x", "spaces": ["OPS"]}]}
    )


def test_a_mapping_with_a_ttl_past_the_stores_maximum_is_refused() -> None:
    mapping = {"value": "x", "spaces": ["ENG"], "max_ttl_seconds": 7200}
    refused("exceeds object_store.ttl.max_seconds", oidc={**OIDC, "mappings": [mapping]})


def test_a_space_checking_actors_needs_confluence() -> None:
    spaces = {"ENG": {"bucket": "bucket-b", "prefix": "ENG/", "actor_check": "confluence"}}
    refused("spaces ENG check actors: add a confluence section", spaces=spaces)


def test_an_unknown_actor_check_or_outage_choice_is_refused() -> None:
    refused("actor_check", spaces={"ENG": {"bucket": "bucket-b", "actor_check": "ldap"}})
    refused(
        "actor_check_unavailable",
        confluence=CONFLUENCE,
        spaces={
            "ENG": {
                "bucket": "bucket-b",
                "actor_check": "confluence",
                "actor_check_unavailable": "open",
            }
        },
    )


def test_client_certificates_need_a_ca_and_known_clients() -> None:
    refused("needs client_ca_file", server={"tls": {**TLS, "client_certs": "required"}})
    refused(
        "client_certificates need client_certs",
        server={"tls": {**TLS, "client_certificates": [{"cn": "g", "client": "gateway"}]}},
    )
    refused(
        "unknown client nobody",
        server={
            "tls": {
                **TLS,
                "client_certs": "required",
                "client_ca_file": "/ca.pem",
                "client_certificates": [{"cn": "g", "client": "nobody"}],
            }
        },
    )
    refused(
        "exactly one of cn, dns, uri, email",
        server={
            "tls": {
                **TLS,
                "client_certs": "required",
                "client_ca_file": "/ca.pem",
                "client_certificates": [{"cn": "g", "dns": "g.example", "client": "gateway"}],
            }
        },
    )


def test_tls_below_1_2_cannot_be_configured() -> None:
    refused("min_version", server={"tls": {**TLS, "min_version": "1.1"}})


@pytest.mark.parametrize(
    ("changes", "target"),
    [
        ({"oidc": {**OIDC, "issuer": "http://idp.example.org"}}, "oidc.issuer"),
        ({"oidc": {**OIDC, "jwks_url": "http://idp.example.org/jwks"}}, "oidc.jwks_url"),
        ({"oidc": {**OIDC, "verify_tls": False}}, "oidc.issuer"),
        ({"confluence": {**CONFLUENCE, "url": "http://wiki.example.org"}}, "confluence.url"),
        ({"confluence": {**CONFLUENCE, "verify_tls": False}}, "confluence.url"),
    ],
)
def test_insecure_transport_to_the_idp_or_confluence_is_refused(
    changes: dict[str, Any], target: str
) -> None:
    refused(f"insecure transport outside loopback: {target}", **changes)
    assert settings(**changes, allow_insecure_transport=True).insecure_transport()


def test_loopback_idp_and_confluence_may_be_plain_http() -> None:
    local = settings(
        oidc={**OIDC, "issuer": "http://127.0.0.1:9000"},
        confluence={**CONFLUENCE, "url": "http://localhost:8090"},
    )
    assert local.insecure_transport() == []


def test_confluence_data_center_takes_a_personal_access_token() -> None:
    dc = {**CONFLUENCE, "url": "https://wiki.example.internal", "deployment": "datacenter"}
    refused("personal access token: set auth: bearer", confluence=dc)
    valid = settings(confluence={**dc, "auth": "bearer", "actor_id": "key"})
    assert valid.confluence is not None and valid.confluence.actor_id == "key"
    refused(
        "actor_id applies to deployment datacenter only",
        confluence={**CONFLUENCE, "actor_id": "key"},
    )
    refused("deployment", confluence={**CONFLUENCE, "deployment": "server"})
