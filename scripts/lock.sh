#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml's dependency lists; rerun after changing them,
# and commit pyproject.toml with requirements/*.lock.txt.
#
#   scripts/lock.sh                            keep every locked version that still fits
#   scripts/lock.sh --upgrade-package aiohttp  move one package to its newest release
#   scripts/lock.sh --upgrade                  move everything
#
# requirements/dev.lock.txt   the application's dependencies plus the dev extra (tests, tools)
# requirements/app.lock.txt   the application's alone (the Docker image), resolved under the
#                             dev lock as a constraint: the image runs exactly the versions the
#                             tests ran with
# Exact versions and sha256 hashes, for CPython 3.11 on Linux x86_64 (CI, the image, this
# machine); pip installs them with --require-hashes (scripts/bootstrap.sh, Dockerfile). The
# resolver is uv's `pip compile` (pinned in the dev extra); the output is plain pip format.
set -euo pipefail
cd "$(dirname "$0")/.."

uv=.venv/bin/uv
if [ ! -x "$uv" ]; then
  uv=$(command -v uv || true)
fi
if [ -z "$uv" ]; then
  echo "lock.sh: no uv: run scripts/bootstrap.sh --venv-only first (the dev extra has it)" >&2
  exit 1
fi

target=(--python-version 3.11 --python-platform x86_64-unknown-linux-gnu)
common=(--generate-hashes --quiet --custom-compile-command scripts/lock.sh "${target[@]}")

"$uv" pip compile pyproject.toml --extra dev "${common[@]}" "$@" \
  --output-file requirements/dev.lock.txt

# The application's set, pinned to the versions just locked for development.
"$uv" pip compile pyproject.toml "${common[@]}" --constraint requirements/dev.lock.txt \
  --output-file requirements/app.lock.txt

echo "lock.sh: wrote requirements/dev.lock.txt and requirements/app.lock.txt" >&2
