# Vault policy for credbroker (KV version 2 mounted at "secret/").
#
#   vault policy write credbroker vendor/vault/credbroker.hcl
#
# KV v2 puts data under <mount>/data/... and versions/metadata under <mount>/metadata/...; an ACL
# must name those prefixes, not the logical path (developer.hashicorp.com, "Upgrade kv version 1
# plugins": change v1 paths "to include the v2 path prefix, data/"). If the mount is not
# "secret", replace the first path segment. In a Vault Enterprise namespace, write this policy
# inside that namespace (VAULT_NAMESPACE=...); the paths stay relative to it.
#
# Deliberately absent: delete, destroy, undelete, list, any "sudo", and every other path.
# The broker also needs auth/token/lookup-self (its /readyz check) and uses nothing else; that
# path is granted by Vault's built-in "default" policy, so keep token_no_default_policy=false.

# Read the service keys at call time (current version, or ?version=N).
# create/update: rotation writes a new version with check-and-set. An ACL cannot require the
# nested options.cas field, so check-and-set is enforced on the key itself instead:
#   vault kv metadata put -mount=secret -cas-required=true credbroker/object-store/service
# (with cas_required, Vault refuses any write to that key without a cas value). The broker
# cannot undo that: it has no write access to metadata/ below.
path "secret/data/credbroker/object-store/*" {
  capabilities = ["read", "create", "update"]
}

# Key age and version list (created_time, current_version, cas_required), read-only.
path "secret/metadata/credbroker/object-store/*" {
  capabilities = ["read"]
}
