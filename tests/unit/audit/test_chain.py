"""The audit chain shows tampering: every kind of change to the file is named at its first bad
record, and a chain cut after its last checkpoint is "unclosed" unless its writer still runs."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credbroker.audit.chain import (
    ChainedAudit,
    canonical,
    read_files,
    rotated_files,
    verify_lines,
)
from credbroker.audit.jsonl import JsonLinesAudit
from credbroker.errors import AuditUnavailable

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()


def dead(_chain: str) -> bool:
    return False


def alive(_chain: str) -> bool:
    return True


async def write_chain(path: Path, n: int, *, chain_id: str = "h:1:1", close: bool = True) -> None:
    audit = ChainedAudit(
        [JsonLinesAudit(path)], signer=KEY, checkpoint_seconds=None, chain_id=chain_id
    )
    for i in range(1, n + 1):
        await audit.record({"event": "vend", "n": i})
        if i % 3 == 0:
            await audit.checkpoint()
    if close:
        await audit.close()


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def verify(path: Path, *, live: bool = False) -> Any:
    return verify_lines(read_files([path]), PUBLIC, alive=alive if live else dead)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in lines(path)]


async def test_an_untouched_closed_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_chain(path, 7)
    report = verify(path)
    assert report.ok, report.first_problem()
    [chain] = report.chains.values()
    assert chain.status == "closed"
    assert (chain.first_seq, chain.last_seq) == (1, 7 + 2 + 1)  # 7 records, 2 + final checkpoint
    assert records(path)[-1]["final"] is True


async def test_an_edited_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_chain(path, 7)
    content = lines(path)
    record = json.loads(content[1])
    record["client"] = "someone-else"
    content[1] = canonical(record) + b"\n"
    path.write_bytes(b"".join(content))
    report = verify(path)
    assert not report.ok
    assert f"{path}:3" in str(report.first_problem())  # the next link breaks
    assert "seq 2 was edited" in str(report.first_problem())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("delete", "missing (deleted or cut)"),
        ("insert", "repeated or out of order"),
        ("reorder", "where 2 was due"),
    ],
)
async def test_deleted_inserted_reordered_records_are_named(
    tmp_path: Path, change: str, expected: str
) -> None:
    path = tmp_path / "audit.jsonl"
    await write_chain(path, 7)
    content = lines(path)
    if change == "delete":
        del content[2]
    elif change == "insert":
        content.insert(2, content[1])
    else:
        content[1], content[2] = content[2], content[1]
    path.write_bytes(b"".join(content))
    problem = str(verify(path).first_problem())
    assert expected in problem


async def test_an_inserted_record_with_relinked_chain_breaks_the_checkpoint(
    tmp_path: Path,
) -> None:
    """An attacker who recomputes every later link still cannot re-sign the checkpoint."""
    path = tmp_path / "audit.jsonl"
    await write_chain(path, 2, close=False)  # seq 1, 2, then nothing sealed yet
    audit = ChainedAudit(
        [JsonLinesAudit(tmp_path / "forged.jsonl")],
        signer=Ed25519PrivateKey.generate(),  # not the broker's key
        checkpoint_seconds=None,
        chain_id="h:1:1",
    )
    for i in range(1, 4):
        await audit.record({"event": "vend", "n": i})
    await audit.close()  # a chain rebuilt from scratch with a record more, closed and signed
    problem = str(verify(tmp_path / "forged.jsonl").first_problem())
    assert "signed by key" in problem


async def test_a_forged_checkpoint_signature_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_chain(path, 4)
    content = lines(path)
    index = next(i for i, x in enumerate(content) if b'"checkpoint"' in x)
    record = json.loads(content[index])
    record["sig"] = base64.b64encode(b"\x00" * 64).decode()
    content[index] = canonical(record) + b"\n"
    path.write_bytes(b"".join(content))
    problem = str(verify(path).first_problem())
    assert f"{path}:{index + 1}" in problem
    assert "bad signature" in problem


async def test_truncation_after_the_last_checkpoint_leaves_the_chain_unclosed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    await write_chain(path, 7)
    content = lines(path)
    last_checkpoint = max(i for i, x in enumerate(content[:-1]) if b'"checkpoint"' in x)
    path.write_bytes(b"".join(content[: last_checkpoint + 2]))  # keep one record after it
    report = verify(path)
    assert not report.ok
    problem = str(report.first_problem())
    assert "unclosed" in problem and "1 record(s) after seq 8" in problem
    # The same file while its writer still runs: open, the unsealed tail counted, not an error.
    live = verify(path, live=True)
    assert live.ok and next(iter(live.chains.values())).unsealed == 1


async def test_a_cut_while_the_writer_runs_shows_at_its_next_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = ChainedAudit(
        [JsonLinesAudit(path)], signer=KEY, checkpoint_seconds=None, chain_id="h:1:1"
    )
    for i in range(3):
        await audit.record({"event": "vend", "n": i})
    path.write_bytes(b"".join(lines(path)[:2]))  # the third record cut away
    await audit.close()  # the final checkpoint follows seq 3, which is gone
    assert "seq 4 where 3 was due" in str(verify(path).first_problem())


async def test_records_after_the_final_checkpoint_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_chain(path, 2)
    content = lines(path)
    last = json.loads(content[-1])
    extra = {"event": "vend", "chain": last["chain"], "seq": last["seq"] + 1, "prev": "0" * 64}
    path.write_bytes(b"".join(content) + canonical(extra) + b"\n")
    assert "after the chain's final checkpoint" in str(verify(path).first_problem())


async def test_several_processes_interleaved_and_rotation_continue_each_chain(
    tmp_path: Path,
) -> None:
    """Three writers on one file (one O_APPEND line each), the file rotated mid-way: each chain
    verifies across both files; a day of several processes."""
    path = tmp_path / "audit.jsonl"
    writers = [
        ChainedAudit(
            [JsonLinesAudit(path)], signer=KEY, checkpoint_seconds=None, chain_id=f"h:{pid}:1"
        )
        for pid in (11, 12, 13)
    ]
    for step in range(12):
        await writers[step % 3].record({"event": "vend", "n": step})
        if step == 5:
            path.rename(tmp_path / "audit.jsonl.1")
    for writer in writers:
        await writer.close()
    files = rotated_files(path)
    assert [p.name for p in files] == ["audit.jsonl.1", "audit.jsonl"]
    report = verify_lines(read_files(files), PUBLIC, alive=dead)
    assert report.ok, report.first_problem()
    assert sorted(c.status for c in report.chains.values()) == ["closed"] * 3
    # Only the newer file: each chain starts mid-way, still verifies from there.
    later = verify_lines(read_files([path]), PUBLIC, alive=dead)
    assert later.ok and {c.first_seq for c in later.chains.values()} == {3}
    # Files in the wrong order: named.
    wrong = verify_lines(read_files(list(reversed(files))), PUBLIC, alive=dead)
    assert not wrong.ok


async def test_a_failing_sink_refuses_the_record_counts_and_keeps_the_chain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        name = "file"
        fail = True

        def __init__(self) -> None:
            self.lines: list[bytes] = []

        async def write(self, line: bytes) -> None:
            if self.fail:
                raise OSError(28, "No space left on device")
            self.lines.append(line)

        async def close(self) -> None:
            return None

    class Count:
        def __init__(self) -> None:
            self.failures: list[str] = []

        def count_audit_failure(self, sink: str) -> None:
            self.failures.append(sink)

    sink, count = Broken(), Count()
    audit = ChainedAudit([sink], signer=None, checkpoint_seconds=None, metrics=count)
    with pytest.raises(AuditUnavailable):
        await audit.record({"event": "vend"})
    assert count.failures == ["file"]
    assert "audit sink file failed (OSError)" in caplog.text
    sink.fail = False
    await audit.record({"event": "vend"})
    assert json.loads(sink.lines[0])["seq"] == 1  # the refused record took no place


async def test_a_checkpoint_without_the_public_key_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_chain(path, 2)
    report = verify_lines(read_files([path]), None, alive=dead)
    assert "no public key" in str(report.first_problem())
