#!/usr/bin/env bash
# Create the MinIO identities credbroker needs, with the MinIO client (mc).
#
#   MC_ALIAS=prod BUCKETS="confluence-exports confluence-legal" ./setup.sh
#
# Needs: an mc alias with admin rights (mc alias set prod https://minio.example.internal:9000 ...)
# and mc RELEASE.2024-10-08T09-37-26Z or later for `mc admin accesskey` (it replaced the
# deprecated `mc admin user svcacct`). The buckets must already exist.
#
# What it does:
#   1. policy credbroker-parent    <- every action any space could be given, on BUCKETS only
#   2. policy credbroker-readonly  <- reads only, on BUCKETS only
#   3. policy credbroker-rotator   <- the admin actions rotation driver `minio-users` calls
#   4. users  credbroker-a, credbroker-b <- the broker's parent identities, used in turn by the
#      rotation (driver kind minio-users, README.md here). Both get credbroker-parent. Only the
#      FIRST one's keys are written out: they go into the store at object_store.credentials_path.
#      The second one gets a random secret that is never kept; the broker gives it a fresh one at
#      its first rotation.
#   5. user   credbroker-ro        <- parent identity of the read-only fallback (config `fallback:`)
#   6. user   credbroker-rotator   <- the pair driver's admin identity (driver
#      admin_credentials_path); never one of the pair
#   7. optionally (BREAKGLASS_HOURS=N): a read-only, expiring access key of credbroker-ro for
#      emergency direct reads (runbooks/04-break-glass.md)
#   8. policy+user credbroker-revoker <- revocation of vended keys (leases.enforcer
#      minio-sts-revoke, its admin_credentials_path): admin:RemoveServiceAccount only
#
# Why the broker holds a USER's keys and not an access key (`mc admin accesskey create`):
# MinIO refuses AssumeRole signed by an access key (service account) or by STS credentials:
# "Temporary credentials or Service accounts cannot generate further temporary credentials"
# (minio/minio cmd/sts-handlers.go, checkAssumeRoleAuth). Access keys are fine for direct use.
# A built-in user has exactly one secret, hence two users for a rotation without downtime.
#
# Secrets are generated here and written to files under OUT_DIR (mode 0600), never echoed.
# Seed them into the secret store (vendor/vault/README.md, `credbroker secrets put`), then delete
# OUT_DIR.
set -euo pipefail

ALIAS=${MC_ALIAS:?set MC_ALIAS to an mc alias with admin rights}
BUCKETS=${BUCKETS:?set BUCKETS to the space-separated bucket names used in the config}
# The pair of driver `minio-users` (its `users:`): exactly two names.
PAIR_USERS=${PAIR_USERS:-credbroker-a credbroker-b}
READONLY_USER=${READONLY_USER:-credbroker-ro}
ROTATOR_USER=${ROTATOR_USER:-credbroker-rotator}
REVOKER_USER=${REVOKER_USER:-credbroker-revoker}
PARENT_POLICY=${PARENT_POLICY:-credbroker-parent}
READONLY_POLICY=${READONLY_POLICY:-credbroker-readonly}
ROTATOR_POLICY=${ROTATOR_POLICY:-credbroker-rotator}
REVOKER_POLICY=${REVOKER_POLICY:-credbroker-revoker}
OUT_DIR=${OUT_DIR:-./credbroker-minio-keys}
BREAKGLASS_HOURS=${BREAKGLASS_HOURS:-}

read -r -a pair <<<"$PAIR_USERS"
if [ "${#pair[@]}" -ne 2 ] || [ "${pair[0]}" = "${pair[1]}" ]; then
  echo "PAIR_USERS must be two different user names" >&2
  exit 1
fi
for u in "${pair[@]}"; do
  if [ "$u" = "$ROTATOR_USER" ] || [ "$u" = "$READONLY_USER" ] || [ "$u" = "$REVOKER_USER" ]; then
    echo "$u cannot be both a pair member and $ROTATOR_USER/$READONLY_USER/$REVOKER_USER" >&2
    exit 1
  fi
done

umask 077
mkdir -p "$OUT_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v mc >/dev/null || {
  echo "mc not found" >&2
  exit 1
}
mc admin accesskey --help >/dev/null 2>&1 || {
  echo "this mc has no 'admin accesskey' (needs RELEASE.2024-10-08T09-37-26Z or later)" >&2
  exit 1
}

# 40 random characters from [A-Za-z0-9]: valid as a MinIO secret key.
# `|| true`: tr dies of SIGPIPE once head has enough, which pipefail would report.
random_secret() { (LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom || true) | head -c 40; }

# policy_json "ACTION..." "BUCKET_ACTION..." -> a policy limited to BUCKETS, same shape as the
# JSON files next to this script (which show it for the example config's buckets).
policy_json() {
  local object_actions=$1 bucket_actions=$2 objects="" buckets="" b
  for b in $BUCKETS; do
    objects+="${objects:+,}\"arn:aws:s3:::$b/*\""
    buckets+="${buckets:+,}\"arn:aws:s3:::$b\""
  done
  printf '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[%s],"Resource":[%s]},{"Effect":"Allow","Action":[%s],"Resource":[%s]}]}\n' \
    "$object_actions" "$objects" "$bucket_actions" "$buckets"
}

# The union of what policy.py can put into any session policy (read and write):
policy_json '"s3:GetObject","s3:PutObject","s3:DeleteObject","s3:AbortMultipartUpload","s3:ListMultipartUploadParts"' \
  '"s3:ListBucket","s3:ListBucketMultipartUploads"' >"$work/parent.json"
policy_json '"s3:GetObject"' '"s3:ListBucket"' >"$work/readonly.json"

# Exactly the admin calls of MinioUserPairDriver (src/credbroker/objectstore/minio_admin.py, through
# minio-py's MinioAdmin), each with the action MinIO checks (minio/minio
# cmd/admin-handlers-users.go; names in minio/pkg policy/admin-action.go):
#   user_add     PUT  add-user                   AddUser: admin:CreateUser (also sets a secret)
#   user_list    GET  list-users                 ListUsers: admin:ListUsers
#   user_info    GET  user-info                  GetUserInfo: admin:GetUser
#   attach_policy POST idp/builtin/policy/attach AttachDetachPolicyBuiltin:
#                admin:UpdatePolicyAssociation (current releases accept
#                admin:AttachUserOrGroupPolicy instead); only called when driver.policy is set
#                and the standby lacks it
# Admin actions take no Resource: they cannot be limited to the pair. admin:CreateUser lets this
# identity set the secret of ANY built-in user: keep its keys like an admin's.
cat >"$work/rotator.json" <<'JSON'
{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["admin:CreateUser","admin:ListUsers","admin:GetUser","admin:UpdatePolicyAssociation"]}]}
JSON

# MinioTokenRevoker's one call (src/credbroker/objectstore/minio_revocation.py): POST
# revoke-tokens/builtin?user=U&tokenRevokeType=LEASE (cmd/admin-handlers-users.go RevokeTokens
# checks admin:RemoveServiceAccount for another user's tokens; MinIO RELEASE.2025-04-03 or later).
# The same action lets this identity delete any user's access keys: keep its keys like an admin's.
cat >"$work/revoker.json" <<'JSON'
{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["admin:RemoveServiceAccount"]}]}
JSON

# `mc admin policy create` overwrites a policy of the same name, so re-running updates it.
mc admin policy create "$ALIAS" "$PARENT_POLICY" "$work/parent.json"
mc admin policy create "$ALIAS" "$READONLY_POLICY" "$work/readonly.json"
mc admin policy create "$ALIAS" "$ROTATOR_POLICY" "$work/rotator.json"
mc admin policy create "$ALIAS" "$REVOKER_POLICY" "$work/revoker.json"

create_user() { # create_user USER POLICY KEEP: new secret; KEEP=yes stores it in OUT_DIR/USER.json
  local user=$1 policy=$2 keep=$3 secret
  if mc admin user info "$ALIAS" "$user" >/dev/null 2>&1; then
    echo "user $user exists: left as is (its secret is rotated by credbroker, runbooks/06-rotation.md)"
  else
    secret=$(random_secret)
    # The access key of a MinIO built-in user is its user name.
    mc admin user add "$ALIAS" "$user" "$secret"
    if [ "$keep" = yes ]; then
      printf '{"access_key_id": "%s", "secret_access_key": "%s"}\n' "$user" "$secret" >"$OUT_DIR/$user.json"
      echo "user $user created; keys in $OUT_DIR/$user.json"
    else
      echo "user $user created with a random secret that is not kept (the broker sets its own)"
    fi
  fi
  mc admin policy attach "$ALIAS" "$policy" --user "$user" ||
    echo "(policy $policy was probably attached already)"
}
create_user "${pair[0]}" "$PARENT_POLICY" yes
create_user "${pair[1]}" "$PARENT_POLICY" no
create_user "$READONLY_USER" "$READONLY_POLICY" yes
create_user "$ROTATOR_USER" "$ROTATOR_POLICY" yes
create_user "$REVOKER_USER" "$REVOKER_POLICY" yes

if [ -n "$BREAKGLASS_HOURS" ]; then
  # An expiring access key of the read-only user, for emergency direct reads by a human.
  # It inherits credbroker-ro's (read-only) policy; it can never write.
  mc admin accesskey create "$ALIAS" "$READONLY_USER" \
    --name "credbroker-breakglass" \
    --description "credbroker break-glass read key, created $(date -u +%FT%TZ)" \
    --expiry-duration "${BREAKGLASS_HOURS}h" --json >"$OUT_DIR/breakglass-accesskey.json"
  echo "break-glass access key (expires in ${BREAKGLASS_HOURS}h) in $OUT_DIR/breakglass-accesskey.json"
fi

echo
echo "Next: seed the keys into the secret store (vendor/vault/README.md), e.g."
echo "  credbroker secrets put --config CONF --cas 0 credbroker/object-store/service < $OUT_DIR/${pair[0]}.json"
echo "  credbroker secrets put --config CONF --cas 0 credbroker/object-store/read-only < $OUT_DIR/$READONLY_USER.json"
echo "  credbroker secrets put --config CONF --cas 0 credbroker/object-store/minio-rotator < $OUT_DIR/$ROTATOR_USER.json"
echo "  credbroker secrets put --config CONF --cas 0 credbroker/object-store/minio-revoker < $OUT_DIR/$REVOKER_USER.json"
echo "(minio-rotator: the rotation driver's admin_credentials_path; minio-revoker: leases.admin_credentials_path), then:"
echo "  rm -rf $OUT_DIR"
