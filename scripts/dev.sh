#!/usr/bin/env bash
# The main job on embedded defaults: a local Ceph RGW (S3 + STS), the embedded sealed secret
# store seeded with the broker's RGW keys, a demo client token, and `credbroker serve`.
# Ctrl-C stops the broker and the RGW. State lives in var/dev/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

DEV=${CREDBROKER_DEV_DIR:-var/dev}
export RGW_PORT=${RGW_PORT:-7480} MON_PORT=${MON_PORT:-6789}
BROKER_PORT=${BROKER_PORT:-8080}
mkdir -p "$DEV"

bash scripts/rgw-dev.sh down "$DEV/rgw" >/dev/null 2>&1 || true
bash scripts/rgw-dev.sh up "$DEV/rgw"
trap 'bash scripts/rgw-dev.sh down "$DEV/rgw"' EXIT
eval "$(bash scripts/rgw-dev.sh env "$DEV/rgw")"

.venv/bin/python scripts/dev_seed.py --dir "$DEV" --port "$BROKER_PORT"
echo
echo "credbroker: serving on http://127.0.0.1:$BROKER_PORT  (tokens in $DEV/client-token and $DEV/admin-token; Ctrl-C stops)"
.venv/bin/credbroker serve --config "$DEV/credbroker.yaml"
