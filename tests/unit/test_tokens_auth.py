"""TokenAuth and new_token, edge by edge: the Bearer scheme, its case, the header's size limit,
messages a caller sees, and the comparison that never stops early."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from credbroker.callers.tokens import TOKEN_PREFIX, TokenAuth, new_token
from credbroker.domain import Access, Client
from credbroker.errors import Unauthenticated

ALICE = Client("alice", frozenset({"ENG"}), Access.READ, 3600)
BOB = Client("bob", frozenset({"OPS"}), Access.WRITE, 600)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def auth_for(*pairs: tuple[str, Client]) -> TokenAuth:
    return TokenAuth([(digest(token), client) for token, client in pairs])


def test_new_tokens_are_prefixed_256_bit_values_with_their_sha256() -> None:
    token, hashed = new_token()
    other, _ = new_token()

    assert token.startswith(TOKEN_PREFIX) and TOKEN_PREFIX == "cbk_"
    assert len(token) == len("cbk_") + 43  # token_urlsafe(32): 32 bytes, 43 characters
    assert hashed == digest(token)
    assert token != other


@pytest.mark.parametrize(
    "header",
    [
        "Bearer tok-a",
        "bearer tok-a",
        "BEARER tok-a",
        "BeArEr tok-a",
        "Bearer  tok-a",  # the token is stripped of the spaces around it
        "Bearer tok-a ",
    ],
)
def test_the_bearer_scheme_is_case_blind_and_the_token_stripped(header: str) -> None:
    assert auth_for(("tok-a", ALICE), ("tok-b", BOB)).authenticate(header) is ALICE


def test_each_token_finds_its_own_client() -> None:
    auth = auth_for(("tok-a", ALICE), ("tok-b", BOB))
    assert auth.authenticate("Bearer tok-b") is BOB
    assert auth.authenticate("Bearer tok-a") is ALICE


@pytest.mark.parametrize("header", [None, ""])
def test_a_missing_header_says_so(header: str | None) -> None:
    with pytest.raises(Unauthenticated) as refused:
        auth_for(("tok-a", ALICE)).authenticate(header)
    assert refused.value.message == "missing Authorization: Bearer token"
    assert (refused.value.code, refused.value.status) == ("unauthenticated", 401)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic tok-a",
        "Token tok-a",
        "Bearertok-a",
        "Bearer\ttok-a",  # only a space separates the scheme
        "tok-a",
        " Bearer tok-a",
        "Bearerx tok-a",
    ],
)
def test_anything_but_bearer_and_a_token_is_refused_as_malformed(header: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        auth_for(("tok-a", ALICE)).authenticate(header)
    assert refused.value.message == "Authorization must be 'Bearer <token>'"


@pytest.mark.parametrize("header", ["Bearer tok-b", "Bearer tok-a2", "Bearer TOK-A", "Bearer tok"])
def test_an_unknown_token_is_refused(header: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        auth_for(("tok-a", ALICE)).authenticate(header)
    assert refused.value.message == "unknown or revoked token"


def test_the_header_may_be_512_characters_and_no_more() -> None:
    longest = "t" * (512 - len("Bearer "))
    auth = auth_for((longest, ALICE), (longest + "t", BOB))

    assert auth.authenticate(f"Bearer {longest}") is ALICE
    with pytest.raises(Unauthenticated, match="must be 'Bearer <token>'"):
        auth.authenticate(f"Bearer {longest}t")


def test_no_clients_means_every_token_is_unknown() -> None:
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        TokenAuth([]).authenticate("Bearer tok-a")


def test_every_stored_hash_is_compared_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)  # as tokens.py looks it up
    auth = auth_for(("tok-a", ALICE), ("tok-b", BOB), ("tok-c", ALICE))

    assert auth.authenticate("Bearer tok-a") is ALICE

    wanted = hashlib.sha256(b"tok-a").digest()
    assert [b for _, b in compared] == [wanted] * 3  # no early exit on the first match
    assert [a for a, _ in compared] == [
        hashlib.sha256(t.encode()).digest()
        for t in "abc"
        and (
            "tok-a",
            "tok-b",
            "tok-c",
        )
    ]
