#!/usr/bin/env bash
# Create the Ceph RGW identities credbroker needs on a real cluster. The production twin of
# scripts/rgw-dev.sh (which builds a throw-away single-node RGW with fixed dev keys).
#
#   BUCKETS="confluence-exports confluence-legal" ./setup.sh
#
# Run on a host where radosgw-admin can reach the cluster (a mon/admin node, or inside
# `cephadm shell`). Extra radosgw-admin arguments go in RGW_ADMIN_ARGS, e.g.
# RGW_ADMIN_ARGS="--rgw-realm=prod --rgw-zone=dc1". The buckets must already exist.
#
# Creates (idempotent: existing users and roles are kept, role policies are overwritten):
#   user  credbroker-broker   the broker's parent identity; its keys go into Vault. No caps,
#                             no user policies: it can only call sts:AssumeRole on the role below.
#   user  credbroker-ro       parent identity of the read-only fallback (config `fallback:`).
#                             --max-buckets=-1 (set on an existing user too): its own key can
#                             create no bucket, so it owns none it could write to.
#   role  credbroker-vend     trust: credbroker-broker; permission: every action any space could
#                             be given, on BUCKETS only (credbroker-vend-role-policy.json).
#   role  credbroker-read     trust: credbroker-ro; permission: reads only, on BUCKETS only.
#
# Prerequisites in the RGW configuration (ceph config, or ceph.conf [client.rgw.*]):
#   rgw_s3_auth_use_sts = true
#   rgw_sts_key         = <exactly 16 characters; RGW encrypts session tokens with it>
#
# Secrets are generated here and written to OUT_DIR (mode 0600), never echoed.
set -euo pipefail

BUCKETS=${BUCKETS:?set BUCKETS to the space-separated bucket names used in the config}
BROKER_UID=${BROKER_UID:-credbroker-broker}
RO_UID=${RO_UID:-credbroker-ro}
VEND_ROLE=${VEND_ROLE:-credbroker-vend}
READ_ROLE=${READ_ROLE:-credbroker-read}
# Seconds. Empty = RGW's default MaxSessionDuration (3600). Larger values need a radosgw-admin
# that knows --max-session-duration (not 16.x pacific; see README.md).
MAX_SESSION_DURATION=${MAX_SESSION_DURATION:-}
OUT_DIR=${OUT_DIR:-./credbroker-rgw-keys}
read -r -a EXTRA <<<"${RGW_ADMIN_ARGS:-}"
A=(radosgw-admin "${EXTRA[@]}")

if [ -n "$MAX_SESSION_DURATION" ] && ! "${A[@]}" --help 2>&1 | grep -q 'role update'; then
  echo "this radosgw-admin has no 'role update' / --max-session-duration (16.x pacific has not);" >&2
  echo "leave MAX_SESSION_DURATION empty (3600 s) or see README.md for the IAM API route" >&2
  exit 2
fi

umask 077
mkdir -p "$OUT_DIR"

# `|| true`: tr dies of SIGPIPE once head has enough, which pipefail would report.
random() { (LC_ALL=C tr -dc "$1" </dev/urandom || true) | head -c "$2"; }

create_user() { # create_user UID DISPLAY-NAME [radosgw-admin user create options...]
  local uid=$1 name=$2 ak sk
  shift 2
  if "${A[@]}" user info --uid="$uid" >/dev/null 2>&1; then
    echo "user $uid exists: left as is (keys: radosgw-admin key create / key rm)"
    return
  fi
  ak=$(random 'A-Z0-9' 20)
  sk=$(random 'A-Za-z0-9' 40)
  # The command prints the user, keys included: keep it off the terminal.
  "${A[@]}" user create --uid="$uid" --display-name="$name" --access-key="$ak" --secret="$sk" \
    "$@" >/dev/null
  printf '{"access_key_id": "%s", "secret_access_key": "%s"}\n' "$ak" "$sk" >"$OUT_DIR/$uid.json"
  echo "user $uid created; keys in $OUT_DIR/$uid.json"
}

trust() { # the trust policy: only this RGW user may assume the role
  printf '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/%s"]},"Action":["sts:AssumeRole"]}]}' "$1"
}

permission() { # permission OBJECT-ACTIONS BUCKET-ACTIONS: limited to BUCKETS
  local objects="" buckets="" b
  for b in $BUCKETS; do
    objects+="${objects:+,}\"arn:aws:s3:::$b/*\""
    buckets+="${buckets:+,}\"arn:aws:s3:::$b\""
  done
  printf '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[%s],"Resource":[%s]},{"Effect":"Allow","Action":[%s],"Resource":[%s]}]}' \
    "$1" "$objects" "$2" "$buckets"
}

arn_of() { sed -n 's/^ *"[Aa]rn": *"\([^"]*\)".*/\1/p'; }

create_role() { # create_role ROLE TRUSTED-UID POLICY-NAME POLICY-DOC
  local role=$1 out
  local duration=()
  [ -z "$MAX_SESSION_DURATION" ] || duration=(--max-session-duration="$MAX_SESSION_DURATION")
  if out=$("${A[@]}" role get --role-name="$role" 2>/dev/null); then
    echo "role $role exists: trust policy left as is"
    if [ -n "$MAX_SESSION_DURATION" ]; then
      "${A[@]}" role update --role-name="$role" "${duration[@]}" >/dev/null
    fi
  else
    out=$("${A[@]}" role create --role-name="$role" --path=/ \
      --assume-role-policy-doc="$(trust "$2")" "${duration[@]}")
  fi
  "${A[@]}" role-policy put --role-name="$role" --policy-name="$3" --policy-doc="$4"
  echo "role $role: $(arn_of <<<"$out")"
}

create_user "$BROKER_UID" "credbroker broker"
# RGW 16: --max-buckets=-1 refuses CreateBucket (403 AccessDenied); 0 means *unlimited*.
# Without it the read-only user's own key creates a bucket and writes into it. modify: also
# for a user an earlier run created. Buckets it already owns are not removed: check with
# `radosgw-admin bucket list --uid=credbroker-ro` (should print []).
create_user "$RO_UID" "credbroker read-only fallback" --max-buckets=-1
"${A[@]}" user modify --uid="$RO_UID" --max-buckets=-1 >/dev/null
echo "user $RO_UID: max-buckets -1 (may create no bucket)"
create_role "$VEND_ROLE" "$BROKER_UID" credbroker-vend \
  "$(permission '"s3:GetObject","s3:PutObject","s3:DeleteObject","s3:AbortMultipartUpload","s3:ListMultipartUploadParts"' \
    '"s3:ListBucket","s3:ListBucketMultipartUploads"')"
create_role "$READ_ROLE" "$RO_UID" credbroker-read \
  "$(permission '"s3:GetObject"' '"s3:ListBucket"')"

echo
echo "Next: object_store.role_arn = the ARN of role $VEND_ROLE printed above;"
echo "seed $OUT_DIR/$BROKER_UID.json into Vault (vendor/vault/README.md), then: rm -rf $OUT_DIR"
