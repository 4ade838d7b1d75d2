"""owner_rotated_status: what `rotation status` shows for keys a store's owner rotates."""

from __future__ import annotations

from credbroker.domain import SecretVersion
from credbroker.errors import SecretNotFound
from credbroker.rotation.owned import owner_rotated_status
from tests.fakes import DOWN, ScriptedStore

KEYS = {"service": "cb/service", "fallback": "cb/read-only"}


async def test_each_key_shows_its_id_and_version_never_the_secret() -> None:
    store = ScriptedStore(
        SecretVersion({"access_key_id": "AKSVC", "secret_access_key": "never-shown"}, 3),
        SecretVersion({"access_key_id": "AKRO", "secret_access_key": "never-shown"}, 1),
    )

    statuses = await owner_rotated_status(KEYS, store, owner="CyberArk")

    assert [s.as_dict() for s in statuses] == [
        {
            "name": "service",
            "secret_path": "cb/service",
            "rotated_by": "CyberArk",
            "current_key_id": "AKSVC",
            "version": 3,
            "problems": [],
        },
        {
            "name": "fallback",
            "secret_path": "cb/read-only",
            "rotated_by": "CyberArk",
            "current_key_id": "AKRO",
            "version": 1,
            "problems": [],
        },
    ]
    assert "never-shown" not in repr(statuses)


async def test_a_store_that_cannot_answer_is_named_in_problems() -> None:
    store = ScriptedStore(DOWN, SecretVersion({"secret_access_key": "x"}, 1))

    down, odd = await owner_rotated_status(KEYS, store, owner="CyberArk")

    assert (down.current_key_id, down.version) == (None, None)
    assert down.problems == [f"secret store: {DOWN.message}"]
    assert odd.problems == ["secret store: the secret has no access_key_id"]


async def test_not_found_is_a_problem_too() -> None:
    missing = SecretNotFound("cyberark-ccp read of 'cb/service': HTTP 404 APPAP004E")
    (status,) = await owner_rotated_status(
        {"service": "cb/service"}, ScriptedStore(missing), owner="CyberArk"
    )
    assert status.problems == [f"secret store: {missing.message}"]
