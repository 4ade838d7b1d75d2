#!/usr/bin/env bash
# credbroker's throw-away Ceph RADOS Gateway (S3 + STS + IAM policy enforcement) for tests and demos.
# Single node on 127.0.0.1, Debian's ceph 16 (pacific) packages, memstore OSD: nothing touches a
# disk device and nothing survives `down`.
#
#   scripts/rgw-dev.sh up DIR     install (apt-get) if missing, boot mon+osd+rgw from DIR, create the
#                                 identities below, write DIR/env. DIR is wiped first, but only if it
#                                 is empty or was made by this script (marker DIR/.credbroker-rgw-dev).
#   scripts/rgw-dev.sh down DIR   stop the daemons started from DIR (only those; idempotent).
#   scripts/rgw-dev.sh env DIR    print DIR/env as `export` lines: eval "$(scripts/rgw-dev.sh env DIR)"
#
# Environment:
#   RGW_PORT     S3/STS/IAM/admin HTTP port (default 7480)
#   MON_PORT     ceph-mon port (default 6789), used for both `mon host` and the monmap. monmaptool
#                makes 6789 a msgr v1 address and any other port a msgr v2 one (clients read
#                `mon host` the same way); either way the mon listens on MON_PORT only (no 3300).
#                So two instances with different MON_PORT, RGW_PORT and DIR run side by side
#                (e.g. the test suite next to a developer's demo). The OSD picks free ports in
#                6800-7300.
#   RGW_STS_KEY  key RGW encrypts session tokens with; exactly 16 characters (default below)
#
# DIR/env (KEY=VALUE, one a line, values never need quoting; written last, so it exists only when
# everything is up):
#   RGW_ENDPOINT RGW_REGION RGW_PORT MON_PORT RGW_DIR RGW_CEPH_CONF RGW_BOOT_SECONDS
#   RGW_ADMIN_UID    RGW_ADMIN_ACCESS_KEY    RGW_ADMIN_SECRET_KEY
#   RGW_BROKER_UID   RGW_BROKER_ACCESS_KEY   RGW_BROKER_SECRET_KEY
#   RGW_READONLY_UID RGW_READONLY_ACCESS_KEY RGW_READONLY_SECRET_KEY
#   RGW_VEND_ROLE_ARN RGW_READ_ROLE_ARN
#
# Identities (fixed dev keys; this instance is for loopback tests only):
#   credbroker-admin   caps users=*;buckets=*;roles=*;user-policy=* (admin ops API incl. key
#                      create/remove for rotation tests, IAM role/user-policy APIs). Owns buckets.
#   credbroker-broker  the broker's parent identity: its keys call sts:AssumeRole. No policies.
#   credbroker-ro      parent identity of the read-only fallback. --max-buckets=-1: its own key
#                      can create no bucket (RGW 16: 0 would mean unlimited), as vendor/rgw.
#   role credbroker-vend  trust: user credbroker-broker; permission: s3:* on arn:aws:s3:::*.
#                      The broker narrows it per key with a session policy.
#   role credbroker-read  trust: user credbroker-ro; permission: read actions only (see READ_ACTIONS)
#                      on arn:aws:s3:::*, so no session policy can widen it to writes.
#   Roles keep RGW's default MaxSessionDuration (3600 s); DurationSeconds must be 900..3600.
#
# Buckets (pinned down by tests/integration/test_rgw_fixture.py, RGW 16.2.15):
#   - Role sessions reach buckets owned by credbroker-admin with no bucket policy and no ACL
#     grant: a session is authorised by (role permission policy AND session policy) alone.
#   - What a session writes is owned by its parent user (credbroker-broker). On a plain bucket the
#     admin, though bucket owner, then gets AccessDenied on GET/HEAD of it (may list and delete).
#     Fix: a bucket policy granting the admin s3:* on the bucket (support/rgw_server.py
#     create_bucket does this), or writers sending x-amz-acl: bucket-owner-full-control.
#   - A session allowed only s3:PutObject can make its object public with x-amz-grant-read (no
#     s3:PutObjectAcl needed; a Deny on s3:x-amz-acl stops only the canned ACL). A public access
#     block with IgnorePublicAcls neutralises that. Never set BlockPublicAcls on RGW 16: it
#     refuses every PutObject, even a private one by the owner.
#
# Traps this recipe avoids or records (each one cost time to find):
#   - beast tcp_nodelay=1: without it every keep-alive request stalls ~40 ms (Nagle/delayed ACK).
#   - memstore OSD and pg_num 8 per pool: RGW's pools would exceed mon_max_pg_per_osd on one OSD.
#   - paxos propose interval 0.1 s (default 1 s): RGW's first start creates its pools one paxos
#     round each; boot drops from ~14 s to ~3.5 s.
#   - An OSD stopped after its mon waits 5 s (osd_mon_shutdown_timeout): `down` stops rgw, osd,
#     mon in that order.
#   - radosgw-admin next to a running radosgw needs --admin-socket= (the socket is taken).
#   - STS needs `rgw s3 auth use sts = true` and a 16-character `rgw sts key`.
#   - AssumeRole needs a RoleArn (arn:aws:iam:::role/NAME) and a trust policy naming the caller;
#     RoleSessionName needs >= 2 characters; DurationSeconds 900..role MaxSessionDuration, else
#     400 InvalidArgument.
#   - RGW 16 cannot parse a session Policy with spaces once a form body encodes them as '+':
#     send compact JSON (json.dumps(..., separators=(",", ":"))). Over 2048 characters:
#     400 PackedPolicyTooLarge. Unknown action: 400 MalformedPolicyDocument.
#   - A session policy with one Resource ARN of ~1.6k characters (1587 here) KILLS radosgw during
#     AssumeRole, silently (no log line); probably std::regex recursion in its ARN parser. Long
#     strings in a Condition are fine. Callers must bound prefix lengths before they get here.
#   - STS errors come back S3-style (<Error><Code>, no <ErrorResponse>): botocore then has no
#     response["Error"]; the code is response["Code"] and str(exc) says "(Unknown)".
#   - Expiration comes back with nanoseconds (…T00:00:00.123456789Z): botocore parses it.
#   - AbortMultipartUpload is authorised as s3:PutObject (not s3:AbortMultipartUpload);
#     ListBucketMultipartUploads is bucket-wide and never satisfies an s3:prefix condition.
#   - The HTTP readiness probe only counts while our own radosgw is alive, and `up` refuses busy
#     ports: otherwise another instance on the same port would look like ours.
set -Eeuo pipefail

readonly ADMIN_UID=credbroker-admin
readonly ADMIN_AK=CBADMIN0000000000001
readonly ADMIN_SK=cbadmin-secret-0000000000000000000000001
readonly ADMIN_CAPS='users=*;buckets=*;roles=*;user-policy=*'
readonly BROKER_UID=credbroker-broker
readonly BROKER_AK=CBBROKER000000000001
readonly BROKER_SK=cbbroker-secret-000000000000000000000001
readonly RO_UID=credbroker-ro
readonly RO_AK=CBREADONLY0000000001
readonly RO_SK=cbreadonly-secret-0000000000000000000001
readonly VEND_ROLE=credbroker-vend
readonly READ_ROLE=credbroker-read
readonly READ_ACTIONS='"s3:GetObject","s3:GetObjectVersion","s3:ListBucket","s3:ListBucketVersions","s3:GetBucketLocation"'
# SigV4 credential-scope region: RGW 16 checks the signature, not the region name, so any string
# signs fine; "default" is the name of RGW's default zonegroup (see the test that proves it).
readonly REGION=default
readonly MARKER=.credbroker-rgw-dev
readonly PACKAGES=(ceph-mon ceph-osd radosgw ceph-common curl procps)

RGW_PORT=${RGW_PORT:-7480}
MON_PORT=${MON_PORT:-6789}
RGW_STS_KEY=${RGW_STS_KEY:-credbrokerstskey}

prog=${0##*/}
usage() {
  echo "usage: $prog up|down|env DIR   (env: RGW_PORT, MON_PORT, RGW_STS_KEY)" >&2
  exit 2
}
log() { echo "$prog: $*" >&2; }

[ $# -eq 2 ] || usage
cmd=$1
[ -n "$2" ] || usage
D=$(realpath -m -- "$2")
CONF=$D/ceph.conf
C=(-c "$CONF")

# Pids of daemon $1 (ceph-mon, ceph-osd or radosgw) whose argv holds exactly "$D/ceph.conf".
daemon_pids() {
  local p
  for p in $(pgrep -x -- "$1" || true); do
    if tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" | grep -qxF -- "$CONF"; then
      echo "$p"
    fi
  done
}
daemon_pid() { daemon_pids "$1" | head -n 1; }

# true once pid $1 has exited (gone, or a zombie nobody reaps)
exited() {
  local st
  st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 0
  [ "$st" = Z ]
}
# wait_exited TENTHS PID...: true once all PIDs exited, false after TENTHS/10 s
wait_exited() {
  local n=$1 p i left
  shift
  for i in $(seq "$n"); do
    left=0
    for p in "$@"; do exited "$p" || left=1; done
    [ $left -eq 1 ] || return 0
    sleep 0.1
  done
  return 1
}

# Stop the daemons started from DIR, clients first: an OSD whose mon is already gone waits
# osd_mon_shutdown_timeout (5 s) for a mark-down ack that never comes.
stop_daemons() {
  local name pids rc=0
  for name in radosgw ceph-osd ceph-mon; do
    pids=$(daemon_pids "$name")
    [ -n "$pids" ] || continue
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    wait_exited 150 $pids && continue
    log "$name ($pids) from $D ignored SIGTERM for 15 s, sending SIGKILL"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    wait_exited 50 $pids || { log "could not stop $name ($pids)"; rc=1; }
  done
  return $rc
}

case $cmd in
down)
  stop_daemons
  exit 0
  ;;
env)
  if [ ! -f "$D/env" ]; then
    log "no $D/env: run '$prog up $D' first"
    exit 1
  fi
  sed -e '/^[A-Z_][A-Z0-9_]*=/!d' -e 's/^/export /' "$D/env"
  exit 0
  ;;
up) ;;
*) usage ;;
esac

# ---------------------------------------------------------------- up
t0=$(date +%s.%N)
for v in RGW_PORT MON_PORT; do
  if ! [[ ${!v} =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ] || [ "${!v}" -gt 65535 ]; then
    log "$v must be a TCP port number, got '${!v}'"
    exit 2
  fi
done
if [ "$RGW_PORT" = "$MON_PORT" ]; then
  log "RGW_PORT and MON_PORT must differ"
  exit 2
fi
if [ ${#RGW_STS_KEY} -ne 16 ]; then
  log "RGW_STS_KEY must be exactly 16 characters (RGW uses it as an AES-128 key)"
  exit 2
fi

missing=()
for b in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl pgrep; do
  command -v "$b" >/dev/null || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "missing ${missing[*]}: apt-get install ${PACKAGES[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "${PACKAGES[@]}" >/dev/null
fi

if ! [[ $D =~ ^[A-Za-z0-9_./+-]+$ ]]; then
  log "DIR must be a plain path (letters, digits, _ . / + -): '$D'" # ceph.conf and DIR/env
  exit 2
fi
if [ -e "$D" ] && [ ! -d "$D" ]; then
  log "$D exists and is not a directory"
  exit 1
fi
if [ -d "$D" ] && [ -n "$(ls -A "$D")" ] && [ ! -e "$D/$MARKER" ]; then
  log "refusing to wipe $D: not empty and not made by $prog (no $MARKER)"
  exit 1
fi
stop_daemons # a previous instance from the same DIR

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$RGW_PORT" "$MON_PORT"; do
  if port_busy "$p"; then
    log "127.0.0.1:$p is already in use (another RGW? set RGW_PORT / MON_PORT)"
    exit 1
  fi
done

rm -rf "$D"
mkdir -p "$D"/{mon,osd0,rgw,log}
touch "$D/$MARKER"

dump_logs() {
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "----- tail of $f" >&2
    tail -n 40 "$f" >&2
  done
}
fail() { # fail MESSAGE [LOGFILE...]: report, show logs, stop what we started
  trap - ERR
  log "FAILED: $1"
  shift
  if [ $# -gt 0 ]; then dump_logs "$@"; else dump_logs "$D"/log/*; fi
  stop_daemons || true
  exit 1
}
trap 'fail "line $LINENO: $BASH_COMMAND (exit $?)"' ERR

# run LOGFILE CMD...: run, keep its output in LOGFILE, show it if it fails
run() {
  local out=$1
  shift
  if ! timeout 120 "$@" >>"$out" 2>&1; then
    fail "$* (see $out)" "$out" "$D"/log/*.log
  fi
}

FSID=$(cat /proc/sys/kernel/random/uuid)
cat >"$CONF" <<CONF
[global]
fsid = $FSID
mon host = 127.0.0.1:$MON_PORT
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
mon allow pool size one = true
mon warn on pool no redundancy = false
# RGW creates its pools one by one, each waits for a paxos round: 1 s default -> boot ~14 s
paxos propose interval = 0.1
paxos min wait = 0.01
osd objectstore = memstore
memstore device bytes = 1073741824
log file = $D/log/\$name.log
admin socket = $D/\$name.asok
pid file = $D/\$name.pid
run dir = $D
keyring = $D/keyring
[mon.a]
mon data = $D/mon
[osd.0]
osd data = $D/osd0
keyring = $D/osd0/keyring
[client.rgw]
keyring = $D/rgw/keyring
rgw data = $D/rgw
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw s3 auth use sts = true
rgw sts key = $RGW_STS_KEY
CONF

SETUP=$D/log/setup.out
CEPH=(timeout 60 ceph "${C[@]}" --connect-timeout 30)
run "$SETUP" ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *'
run "$SETUP" ceph-authtool "$D/keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *'
run "$SETUP" monmaptool --create --add a "127.0.0.1:$MON_PORT" --fsid "$FSID" "$D/monmap"
run "$SETUP" ceph-mon --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" "${C[@]}"
run "$SETUP" ceph-mon -i a "${C[@]}"
for i in $(seq 100); do
  port_busy "$MON_PORT" && break
  [ -n "$(daemon_pid ceph-mon)" ] || fail "ceph-mon exited" "$D/log/mon.a.log" "$SETUP"
  sleep 0.1
done
port_busy "$MON_PORT" || fail "ceph-mon not listening on $MON_PORT after 10 s" "$D/log/mon.a.log"

OSD=$("${CEPH[@]}" osd create 2>>"$SETUP") || fail "ceph osd create" "$SETUP" "$D/log/mon.a.log"
run "$SETUP" "${CEPH[@]}" auth get-or-create "osd.$OSD" mon 'allow profile osd' osd 'allow *' \
  mgr 'allow profile osd' -o "$D/osd0/keyring"
run "$SETUP" ceph-osd -i "$OSD" --mkfs "${C[@]}"
run "$SETUP" "${CEPH[@]}" osd crush add "osd.$OSD" 1.0 host=localhost root=default
run "$SETUP" ceph-osd -i "$OSD" "${C[@]}"
osd_up() { [[ $("${CEPH[@]}" osd stat -f json 2>>"$SETUP") == *'"num_up_osds":1,'* ]]; }
for i in $(seq 300); do
  osd_up && break
  [ -n "$(daemon_pid ceph-osd)" ] || fail "ceph-osd exited" "$D/log/osd.$OSD.log" "$SETUP"
  sleep 0.1
done
osd_up || fail "osd.$OSD not up after 30 s" "$D/log/osd.$OSD.log" "$D/log/mon.a.log"

run "$SETUP" "${CEPH[@]}" auth get-or-create client.rgw mon 'allow rw' osd 'allow rwx' \
  -o "$D/rgw/keyring"
run "$SETUP" radosgw "${C[@]}" -n client.rgw
RGW_LOG=$D/log/client.rgw.log
for i in $(seq 600); do
  [ -n "$(daemon_pid radosgw)" ] || fail "radosgw exited" "$RGW_LOG" "$SETUP"
  curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/" && break
  sleep 0.1
done
curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/" ||
  fail "radosgw not answering on 127.0.0.1:$RGW_PORT after 60 s" "$RGW_LOG" "$SETUP"

# ---------------------------------------------------------------- identities
# --admin-socket= : the running radosgw already owns client.rgw's admin socket
A=(radosgw-admin "${C[@]}" -n client.rgw --admin-socket=)
run "$SETUP" "${A[@]}" user create --uid="$ADMIN_UID" --display-name="credbroker admin" \
  --access-key="$ADMIN_AK" --secret="$ADMIN_SK" --caps="$ADMIN_CAPS"
run "$SETUP" "${A[@]}" user create --uid="$BROKER_UID" --display-name="credbroker broker" \
  --access-key="$BROKER_AK" --secret="$BROKER_SK"
run "$SETUP" "${A[@]}" user create --uid="$RO_UID" --display-name="credbroker read-only" \
  --access-key="$RO_AK" --secret="$RO_SK" --max-buckets=-1

trust() {
  printf '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/%s"]},"Action":["sts:AssumeRole"]}]}' "$1"
}
permission() {
  printf '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[%s],"Resource":["arn:aws:s3:::*"]}]}' "$1"
}
role_arn() { # create role $1 trusting user $2, print its ARN as RGW reports it
  local out
  out=$(timeout 60 "${A[@]}" role create --role-name="$1" --path=/ \
    --assume-role-policy-doc="$(trust "$2")" 2>>"$SETUP") || fail "role create $1" "$SETUP"
  echo "$out" >>"$SETUP"
  sed -n 's/^ *"[Aa]rn": *"\([^"]*\)".*/\1/p' <<<"$out"
}
VEND_ARN=$(role_arn "$VEND_ROLE" "$BROKER_UID")
READ_ARN=$(role_arn "$READ_ROLE" "$RO_UID")
[ -n "$VEND_ARN" ] && [ -n "$READ_ARN" ] || fail "no ARN in 'role create' output" "$SETUP"
run "$SETUP" "${A[@]}" role-policy put --role-name="$VEND_ROLE" --policy-name=s3-all \
  --policy-doc="$(permission '"s3:*"')"
run "$SETUP" "${A[@]}" role-policy put --role-name="$READ_ROLE" --policy-name=s3-read \
  --policy-doc="$(permission "$READ_ACTIONS")"

trap - ERR
boot=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
cat >"$D/env.tmp" <<ENV
RGW_ENDPOINT=http://127.0.0.1:$RGW_PORT
RGW_REGION=$REGION
RGW_PORT=$RGW_PORT
MON_PORT=$MON_PORT
RGW_DIR=$D
RGW_CEPH_CONF=$CONF
RGW_BOOT_SECONDS=$boot
RGW_ADMIN_UID=$ADMIN_UID
RGW_ADMIN_ACCESS_KEY=$ADMIN_AK
RGW_ADMIN_SECRET_KEY=$ADMIN_SK
RGW_BROKER_UID=$BROKER_UID
RGW_BROKER_ACCESS_KEY=$BROKER_AK
RGW_BROKER_SECRET_KEY=$BROKER_SK
RGW_READONLY_UID=$RO_UID
RGW_READONLY_ACCESS_KEY=$RO_AK
RGW_READONLY_SECRET_KEY=$RO_SK
RGW_VEND_ROLE_ARN=$VEND_ARN
RGW_READ_ROLE_ARN=$READ_ARN
ENV
mv "$D/env.tmp" "$D/env"
log "RGW up in ${boot}s: http://127.0.0.1:$RGW_PORT (mon 127.0.0.1:$MON_PORT, dir $D; stop: $prog down $D)"
