"""The escrow file: K of N shares open it, fewer never do, a share of another escrow or a
typo is refused by name, sealing needs no share and replaces the key it held, the file holds
no secret, and a swapped or tampered file is refused."""

from __future__ import annotations

import itertools
import json
import stat
from pathlib import Path

import pytest

from credbroker.domain import AccessKey
from credbroker.errors import EscrowError, EscrowSealed
from credbroker.escrow.file import EscrowFile, share_fingerprint

OLD = AccessKey("AKOLDSERVICEKEY", "old-secret-value-0001", 4)
NEW = AccessKey("AKNEWSERVICEKEY", "new-secret-value-0002", 5)


@pytest.fixture
def made(tmp_path: Path) -> tuple[EscrowFile, tuple[str, ...]]:
    escrow, new = EscrowFile.init(tmp_path / "escrow.json", shares=5, threshold=3)
    assert repr(new).count("cbes1") == 0  # never the shares in a repr
    return escrow, new.shares


def test_any_three_of_five_shares_open_it_and_no_two_do(
    made: tuple[EscrowFile, tuple[str, ...]],
) -> None:
    escrow, shares = made
    escrow.seal(OLD)
    for three in itertools.combinations(shares, 3):
        assert escrow.open(list(three)) == OLD
    assert escrow.open(list(shares)) == OLD
    for two in itertools.combinations(shares, 2):
        with pytest.raises(EscrowSealed, match="needs 3"):
            escrow.open(list(two))
    with pytest.raises(EscrowSealed):  # the same share three times is one share
        escrow.open([shares[0]] * 3)


def test_two_shares_rebuild_nothing_even_when_forced(
    made: tuple[EscrowFile, tuple[str, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the count check, two shares give a wrong private key: the public key refuses it."""
    escrow, shares = made
    escrow.seal(OLD)
    document = json.loads(escrow.path.read_text())
    document["threshold"] = 2  # a file edited to ask for fewer shares
    escrow.path.write_text(json.dumps(document))
    with pytest.raises(EscrowError, match="do not open"):
        escrow.open(list(shares[:2]))


def test_sealing_replaces_the_key_and_needs_no_share(
    made: tuple[EscrowFile, tuple[str, ...]],
) -> None:
    escrow, shares = made
    escrow.seal(OLD)
    escrow.seal(NEW)
    assert escrow.sealed_key_id() == NEW.access_key_id
    assert escrow.open(list(shares[2:])) == NEW
    text = escrow.path.read_text()
    for secret in (OLD.secret_access_key, NEW.secret_access_key, OLD.access_key_id, *shares):
        assert secret not in text
    assert NEW.access_key_id in text  # the id, for `escrow status`
    assert stat.S_IMODE(escrow.path.stat().st_mode) == 0o600
    assert list(escrow.path.parent.iterdir()) == [escrow.path]  # no temporary left behind


def test_a_share_of_another_escrow_or_with_a_typo_is_refused_without_echo(
    made: tuple[EscrowFile, tuple[str, ...]], tmp_path: Path
) -> None:
    escrow, shares = made
    _, other = EscrowFile.init(tmp_path / "other.json", shares=5, threshold=3)
    typo = shares[0][:-1] + ("0" if shares[0][-1] != "0" else "1")
    for bad in (other.shares[0], typo, "cbes1-zz"):
        with pytest.raises(EscrowError) as refused:
            escrow.share_index(bad)
        assert bad not in refused.value.message
    assert [escrow.share_index(s) for s in shares] == [1, 2, 3, 4, 5]
    assert escrow.status()["share_fingerprints"]["2"] == share_fingerprint(shares[1])


def test_an_empty_escrow_does_not_open(made: tuple[EscrowFile, tuple[str, ...]]) -> None:
    escrow, shares = made
    with pytest.raises(EscrowSealed, match="no key"):
        escrow.open(list(shares))


def test_a_tampered_or_swapped_file_is_refused(
    made: tuple[EscrowFile, tuple[str, ...]], tmp_path: Path
) -> None:
    escrow, shares = made
    escrow.seal(OLD)
    document = json.loads(escrow.path.read_text())
    document["sealed"]["key_id"] = "AKSOMEONEELSE"  # bound in as associated data
    escrow.path.write_text(json.dumps(document))
    with pytest.raises(EscrowError, match="tampered"):
        escrow.open(list(shares[:3]))

    pinned = EscrowFile(escrow.path, pinned_fingerprint=escrow.fingerprint)
    swapped, _ = EscrowFile.init(tmp_path / "swap.json", shares=2, threshold=2)
    escrow.path.write_text(swapped.path.read_text())  # someone's own public key
    with pytest.raises(EscrowError, match="pins"):
        pinned.seal(NEW)


def test_init_refuses_to_replace_an_escrow_unless_asked_and_bad_counts(tmp_path: Path) -> None:
    path = tmp_path / "escrow.json"
    EscrowFile.init(path, shares=3, threshold=2)
    with pytest.raises(EscrowError, match="--replace"):
        EscrowFile.init(path, shares=3, threshold=2)
    EscrowFile.init(path, shares=3, threshold=2, replace=True)
    for shares, threshold in ((3, 1), (2, 3), (300, 3)):
        with pytest.raises(EscrowError):
            EscrowFile.init(tmp_path / "x.json", shares=shares, threshold=threshold)
    with pytest.raises(EscrowSealed, match="escrow init"):
        EscrowFile(tmp_path / "missing.json").sealed_key_id()
