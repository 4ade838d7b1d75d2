"""A day of several real processes writing one audit file at once: every chain verifies, and
one process's record deleted is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credbroker.audit.chain import (
    generate_private_pem,
    load_private_key,
    read_files,
    verify_lines,
)

WRITER = """
import asyncio, sys
from datetime import UTC, datetime
from pathlib import Path
from credbroker.audit.chain import ChainedAudit, load_private_key
from credbroker.audit.jsonl import JsonLinesAudit

async def main() -> None:
    key = load_private_key(Path(sys.argv[2]).read_bytes())
    audit = ChainedAudit([JsonLinesAudit(Path(sys.argv[1]))], signer=key, checkpoint_seconds=None)
    for n in range(200):
        now = datetime.now(UTC).isoformat()
        await audit.record({"ts": now, "event": "vend", "n": n})
        if n % 50 == 49:
            await audit.checkpoint()
    await audit.close()

asyncio.run(main())
"""


def test_four_processes_on_one_file_each_verify(tmp_path: Path) -> None:
    pem = tmp_path / "key.pem"
    pem.write_bytes(generate_private_pem())
    path = tmp_path / "audit.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(pem)]) for _ in range(4)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    public = load_private_key(pem.read_bytes()).public_key()
    report = verify_lines(read_files([path]), public)
    assert report.ok, report.first_problem()
    assert len(report.chains) == 4
    assert all(c.status == "closed" and c.last_seq == 205 for c in report.chains.values())

    original = path.read_bytes().splitlines(keepends=True)
    middle = next(i for i, x in enumerate(original) if b'"seq":100,' in x)
    path.write_bytes(b"".join(original[:middle] + original[middle + 1 :]))
    broken = verify_lines(read_files([path]), public)
    assert not broken.ok and "seq 101 where 100 was due" in str(broken.first_problem())
    # The first record of a chain that started after the file's first record: deleted, named.
    heads = [i for i, x in enumerate(original) if b'"seq":1,' in x]
    path.write_bytes(b"".join(original[: heads[-1]] + original[heads[-1] + 1 :]))
    head = verify_lines(read_files([path]), public)
    assert "seq 1..1 missing" in str(head.first_problem())
    other_key = Ed25519PrivateKey.generate().public_key()
    assert not verify_lines(read_files([path]), other_key).ok
