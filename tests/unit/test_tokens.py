from __future__ import annotations

import pytest

from credbroker.callers.tokens import TokenAuth, new_token
from credbroker.domain import Access, Client
from credbroker.errors import Unauthenticated


def client(name: str) -> Client:
    return Client(name, frozenset({"ENG"}), Access.READ, 3600)


def test_a_minted_token_authenticates_its_client_only() -> None:
    token_a, hash_a = new_token()
    token_b, hash_b = new_token()
    auth = TokenAuth([(hash_a, client("a")), (hash_b, client("b"))])
    assert auth.authenticate(f"Bearer {token_a}").id == "a"
    assert auth.authenticate(f"bearer {token_b}").id == "b"
    assert token_a not in hash_a


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic abc", "Token x", "Bearer wrong", "x" * 600]
)
def test_missing_or_wrong_tokens_are_unauthenticated(header: str | None) -> None:
    _, digest = new_token()
    with pytest.raises(Unauthenticated):
        TokenAuth([(digest, client("a"))]).authenticate(header)
