"""support/runbooks.py: which blocks count, and how they run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.runbooks import marked_blocks, run_runbook

DOC = """# A runbook

```bash runbook
export GREETING=hello
```

```bash
echo "an example: never run"
exit 7
```

````bash runbook
echo "$GREETING from step two" > out.txt
```
not a closing fence: it has an info string above? no, this is inside a 4-backtick block
````

~~~bash runbook
cat out.txt
~~~

```bash  runbook
echo "two spaces: not exactly the mark either"
```

```bash runbook extra
echo "not exactly the mark"
```
"""


def test_only_blocks_marked_exactly_are_taken_in_order(tmp_path: Path) -> None:
    path = tmp_path / "r.md"
    path.write_text(DOC)
    blocks = marked_blocks(path)
    assert blocks[0] == "export GREETING=hello\n"
    assert blocks[1].startswith('echo "$GREETING from step two" > out.txt\n```\n')
    assert blocks[2] == "cat out.txt\n"
    assert len(blocks) == 3  # "bash  runbook" splits into two words with two spaces: not it
    assert not any("never run" in b or "not exactly the mark" in b for b in blocks)


def test_the_blocks_run_as_one_script_and_stop_at_the_first_failure(tmp_path: Path) -> None:
    ok = tmp_path / "ok.md"
    ok.write_text('```bash runbook\nexport A=1\n```\n\n```bash runbook\necho "A=$A"\n```\n')
    env = {"PATH": os.environ["PATH"]}
    done = run_runbook(ok, env=env, cwd=tmp_path, timeout=30)
    assert (done.returncode, done.stdout) == (0, "A=1\n")

    failing = tmp_path / "failing.md"
    failing.write_text(
        "```bash runbook\nfalse | true\necho piped\n```\n"
        '```bash runbook\necho "$UNSET_VARIABLE"\necho never\n```\n'
    )
    done = run_runbook(failing, env=env, cwd=tmp_path, timeout=30)
    assert done.returncode != 0 and "never" not in done.stdout and "piped" not in done.stdout


def test_an_unclosed_block_or_none_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "r.md"
    path.write_text("```bash runbook\necho hi\n")
    with pytest.raises(ValueError, match="never closed"):
        marked_blocks(path)
    path.write_text("no blocks\n")
    with pytest.raises(ValueError, match="no ```bash runbook"):
        run_runbook(path, env={}, cwd=tmp_path, timeout=5)
