#!/usr/bin/env bash
# Shared set-up for dev.sh, test.sh and check: Debian packages (Ceph RGW) and the project's venv.
# Idempotent and quiet when everything is already there.
#   --venv-only   the venv alone: no apt, no root (scripts/check)
set -euo pipefail
cd "$(dirname "$0")/.."

venv_only=false
if [ "${1:-}" = --venv-only ]; then
  venv_only=true
fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Ceph RGW (the real S3/STS server of the tests), Chromium (renders the compliance report in a
# test), Prometheus (its promtool tests the shipped alert rules), and jq, strace and curl (the
# runbooks' tested blocks; the container-layout test watches file writes with strace).
if ! $venv_only && { ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null \
  || ! command -v chromium >/dev/null || ! command -v promtool >/dev/null \
  || ! command -v jq >/dev/null || ! command -v strace >/dev/null || ! command -v curl >/dev/null; }; then
  echo "bootstrap: installing Ceph RGW, Chromium and Prometheus from Debian's packages" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    ceph-mon ceph-osd radosgw ceph-common >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium prometheus jq strace curl >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi

# The venv is exactly the dev lock (every dependency at an exact version, hashes checked) plus
# the project itself, editable and without dependencies. It is rebuilt when the content of the
# lock or of pyproject.toml (entry points, version) changes: content hashes, not mtimes, so a
# fresh clone or a checkout with old mtimes is never mistaken for up to date.
lock=requirements/dev.lock.txt
stamp=.venv/.credbroker-installed
want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing Python dependencies into .venv from $lock" >&2
  .venv/bin/python -m pip install -q --require-hashes -r "$lock"
  .venv/bin/python -m pip install -q --no-deps -e .
  # Remove what the previous lock named and this one does not: a dropped dependency must not
  # linger and hide an undeclared import. Packages installed by hand (uvloop for the benchmark,
  # a mutation tester) were never locked and stay.
  names() { sed -n 's/^\([A-Za-z0-9._-]*\)==.*/\1/p' | tr 'A-Z_.' 'a-z--' | sort -u; }
  previous=.venv/.credbroker-lock.txt
  if [ -f "$previous" ]; then
    dropped=$(comm -23 <(names <"$previous") <(names <"$lock") | grep . || true)
    if [ -n "$dropped" ]; then
      echo "bootstrap: removing packages the lock no longer names:" $dropped >&2
      # shellcheck disable=SC2086  # one argument per name
      .venv/bin/python -m pip uninstall -q -y $dropped
    fi
  fi
  cp "$lock" "$previous"
  echo "$want" >"$stamp"
fi
