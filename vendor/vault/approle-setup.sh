#!/usr/bin/env bash
# Set up Vault AppRole login for credbroker: policy, role, role_id, and a response-wrapped
# secret_id. Run as a Vault operator (VAULT_ADDR, VAULT_TOKEN, and VAULT_NAMESPACE on Vault
# Enterprise, in the environment; VAULT_CACERT for a private CA).
#
#   CIDRS=10.20.30.0/24 ./vendor/vault/approle-setup.sh
#
# Prints, on stdout, two lines:
#   role_id=<...>            not secret on its own; goes to /etc/credbroker/vault/role_id
#   wrapping_token=<...>     single use, expires after WRAP_TTL; unwrap it ON the broker host:
#       VAULT_TOKEN=<wrapping_token> vault unwrap -field=secret_id > /etc/credbroker/vault/secret_id
#
# Settings (environment):
#   ROLE (credbroker), POLICY (credbroker), APPROLE_MOUNT (approle)
#   TOKEN_TTL (1h)        lifetime of the token a login gives. The broker does not renew tokens:
#                         when Vault answers 403 it logs in again with the same secret_id.
#   TOKEN_MAX_TTL (4h)
#   SECRET_ID_TTL (2160h = 90 days). After that, logins fail and every vend answers 502
#                         vault_permission_denied: issue a new secret_id before it expires
#                         (run this script again; it leaves the role as configured here) and
#                         restart the broker.
#   SECRET_ID_NUM_USES (0 = unlimited). MUST stay 0 (or very large): the broker logs in once at
#                         start and again every time its token expires (about every TOKEN_TTL),
#                         always with the same secret_id. With 1 it would stop after one token.
#   CIDRS (empty)         comma-separated CIDR blocks of the broker hosts; binds both the
#                         secret_id (secret_id_bound_cidrs) and the tokens (token_bound_cidrs).
#   WRAP_TTL (10m)        how long the wrapping token can be unwrapped.
set -euo pipefail

: "${VAULT_ADDR:?set VAULT_ADDR}"
ROLE=${ROLE:-credbroker}
POLICY=${POLICY:-credbroker}
APPROLE_MOUNT=${APPROLE_MOUNT:-approle}
TOKEN_TTL=${TOKEN_TTL:-1h}
TOKEN_MAX_TTL=${TOKEN_MAX_TTL:-4h}
SECRET_ID_TTL=${SECRET_ID_TTL:-2160h}
SECRET_ID_NUM_USES=${SECRET_ID_NUM_USES:-0}
CIDRS=${CIDRS:-}
WRAP_TTL=${WRAP_TTL:-10m}
HERE=$(cd "$(dirname "$0")" && pwd)

if [ "$SECRET_ID_NUM_USES" != 0 ]; then
  echo "warning: SECRET_ID_NUM_USES=$SECRET_ID_NUM_USES; the broker re-logs in with the same" \
    "secret_id whenever its token expires and will fail after that many logins" >&2
fi

# 1. The AppRole auth method (once per mount).
# (The listing is read whole first: `grep -q` exiting early would fail the pipe under pipefail.)
mounts=$(vault auth list -format=json)
if ! grep -q "\"$APPROLE_MOUNT/\"" <<<"$mounts"; then
  vault auth enable -path="$APPROLE_MOUNT" approle >&2
fi
# Vault silently caps secret_id_ttl at the mount's max lease TTL (768h by default, so a 90-day
# secret_id would last 32 days): raise the mount's ceiling to the secret_id's lifetime.
vault auth tune -max-lease-ttl="$SECRET_ID_TTL" "$APPROLE_MOUNT/" >&2

# 2. The policy: read the service keys, write new versions (check-and-set), read metadata.
vault policy write "$POLICY" "$HERE/credbroker.hcl" >&2

# 3. The role. token_policies replaces the deprecated "policies"; the built-in "default"
#    policy stays attached (token_no_default_policy defaults to false) because the broker's
#    readiness check calls auth/token/lookup-self, which "default" grants.
args=(
  token_policies="$POLICY"
  token_ttl="$TOKEN_TTL"
  token_max_ttl="$TOKEN_MAX_TTL"
  token_type=service
  secret_id_ttl="$SECRET_ID_TTL"
  secret_id_num_uses="$SECRET_ID_NUM_USES"
  bind_secret_id=true
)
if [ -n "$CIDRS" ]; then
  args+=(secret_id_bound_cidrs="$CIDRS" token_bound_cidrs="$CIDRS")
fi
vault write "auth/$APPROLE_MOUNT/role/$ROLE" "${args[@]}" >&2

# 4. role_id (stable; identifies the role) and a response-wrapped secret_id (the credential).
#    Wrapping means the secret_id itself never appears here, only a single-use token for it.
role_id=$(vault read -field=role_id "auth/$APPROLE_MOUNT/role/$ROLE/role-id")
wrapping_token=$(vault write -f -wrap-ttl="$WRAP_TTL" -field=wrapping_token \
  "auth/$APPROLE_MOUNT/role/$ROLE/secret-id")
echo "role_id=$role_id"
echo "wrapping_token=$wrapping_token"
