#!/usr/bin/env bash
# The main job on embedded defaults: a local Ceph RGW (S3 + STS), the embedded sealed secret
# store seeded with the broker's RGW keys, a demo client token, and `credbroker serve`.
# Files live in var/dev/ (git-ignored).
#
#   ./scripts/dev.sh                  a fresh RGW and a fresh store (the RGW keeps no data
#                                     across its restarts, so the store, the rotation state and
#                                     the tokens are made anew); Ctrl-C stops the broker and RGW
#   ./scripts/dev.sh --keep-rgw       the same, but Ctrl-C leaves the RGW running
#   ./scripts/dev.sh --broker-only    restart only the broker, on the RGW left running: the
#                                     store, rotation state, tokens and audit log are kept
#   ./scripts/dev.sh --reset          with --broker-only: seed the store and config again
set -euo pipefail
cd "$(dirname "$0")/.."

BROKER_ONLY=0 KEEP_RGW=0 RESET=0
for arg in "$@"; do
  case $arg in
  --broker-only) BROKER_ONLY=1 ;;
  --keep-rgw) KEEP_RGW=1 ;;
  --reset) RESET=1 ;;
  *)
    echo "usage: $0 [--keep-rgw | --broker-only [--reset]]" >&2
    exit 2
    ;;
  esac
done

DEV=${CREDBROKER_DEV_DIR:-var/dev}
export RGW_PORT=${RGW_PORT:-7480} MON_PORT=${MON_PORT:-6789}
BROKER_PORT=${BROKER_PORT:-8080}
mkdir -p "$DEV"

if [ "$BROKER_ONLY" = 1 ]; then
  [ -x .venv/bin/credbroker ] || bash scripts/bootstrap.sh
  if [ ! -f "$DEV/rgw/env" ] || ! eval "$(bash scripts/rgw-dev.sh env "$DEV/rgw")" \
    || ! curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/"; then
    echo "dev.sh: no RGW running from $DEV/rgw: start one with ./scripts/dev.sh --keep-rgw" >&2
    exit 1
  fi
  if [ "$RESET" = 1 ] || [ ! -f "$DEV/credbroker.yaml" ]; then
    .venv/bin/python scripts/dev_seed.py --dir "$DEV" --port "$BROKER_PORT"
  fi
else
  bash scripts/bootstrap.sh
  bash scripts/rgw-dev.sh down "$DEV/rgw" >/dev/null 2>&1 || true
  bash scripts/rgw-dev.sh up "$DEV/rgw"
  if [ "$KEEP_RGW" = 0 ]; then
    trap 'bash scripts/rgw-dev.sh down "$DEV/rgw"' EXIT
  fi
  eval "$(bash scripts/rgw-dev.sh env "$DEV/rgw")"
  .venv/bin/python scripts/dev_seed.py --dir "$DEV" --port "$BROKER_PORT"
fi
echo
echo "credbroker: serving on http://127.0.0.1:$BROKER_PORT  (tokens in $DEV/client-token and $DEV/admin-token; Ctrl-C stops)"
.venv/bin/credbroker serve --config "$DEV/credbroker.yaml"
