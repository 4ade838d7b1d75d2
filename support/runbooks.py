"""Runbook command blocks, run by the test suite (tests/integration/test_runbooks.py).

A runbook marks the blocks an operator runs as written with the info string `bash runbook`
(exactly: "```bash runbook"); other blocks (examples, output, the parts that need a real host)
are left alone. `run_runbook` runs every marked block of one runbook, in order, as ONE script
under `bash -euo pipefail`: a variable a step sets is there for the next, and the first failing
command stops the run, as it would stop an operator.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

MARK = "bash runbook"
# A fence: three or more backticks or tildes, then the info string (CommonMark).
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def marked_blocks(path: Path) -> list[str]:
    """The bodies of the fenced blocks of `path` whose info string is exactly `bash runbook`,
    in order (each ends with a newline)."""
    blocks: list[str] = []
    body: list[str] | None = None
    opening = ""
    marked = False
    for line in path.read_text().splitlines():
        match = _FENCE.match(line)
        if body is None:
            if match is not None:
                opening, marked, body = match["fence"], match["info"].strip() == MARK, []
            continue
        if (
            match is not None
            and match["info"].strip() == ""
            and match["fence"][0] == opening[0]
            and len(match["fence"]) >= len(opening)
        ):
            if marked:
                blocks.append("".join(f"{text}\n" for text in body))
            body = None
            continue
        body.append(line)
    if body is not None:
        raise ValueError(f"{path}: a fenced block is never closed")
    return blocks


def run_runbook(
    path: Path, *, env: Mapping[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Every marked block of `path`, concatenated in order, run as one `bash -euo pipefail`
    script in `cwd` with exactly `env` (nothing inherited). Output is captured; the caller
    checks the return code and the state the runbook promises."""
    blocks = marked_blocks(path)
    if not blocks:
        raise ValueError(f"{path}: no ```{MARK} block")
    script = "".join(blocks)
    return subprocess.run(  # noqa: S603 - the repository's own runbooks
        ["bash", "-euo", "pipefail", "-c", script],  # noqa: S607 - bash from PATH
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
