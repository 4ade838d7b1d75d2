#!/usr/bin/env bash
# The test command: installs what it needs, runs the gates (ruff, mypy), then the whole pytest
# suite, which starts its own Ceph RGW on free loopback ports. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

echo "== ruff" >&2
.venv/bin/ruff check src tests bench scripts support
.venv/bin/ruff format --check src tests bench scripts support
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
set +e
.venv/bin/pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  # pytest's "no tests collected" (a -k filter that matched nothing): not a failure of the code.
  echo "pytest collected no tests" >&2
  exit 0
fi
exit "$status"
