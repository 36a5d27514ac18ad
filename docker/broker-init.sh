#!/bin/sh
# One-shot broker provisioning for the compose stack (the `broker-init` service).
#
# Idempotent: the first run creates the broker directory (`thermoscreen broker init`: config,
# CA, server certificate, password file, ACL, site key); every run then makes sure each pooled
# account has a password file in its role's pool. Existing accounts keep their passwords.
#
# Pools (one volume per role, mounted read-only by that role's containers):
#   $ACCOUNTS_DIR/inference/infer-1..N.password   N = $INFERENCE_ACCOUNTS
#   $ACCOUNTS_DIR/bridge/bridge.password
#   $ACCOUNTS_DIR/devices/sim-01..M.password       M = $DEVICE_ACCOUNTS (+ site.key)
# plus ca.crt in every pool. A container claims one account of its pool at start
# (claim-account.sh), so `docker compose up --scale inference=3` gives each replica its own
# account and node id.
set -eu

BROKER_DIR="${BROKER_DIR:-/broker}"
ACCOUNTS_DIR="${ACCOUNTS_DIR:-/accounts}"
INFERENCE_ACCOUNTS="${INFERENCE_ACCOUNTS:-8}"
DEVICE_ACCOUNTS="${DEVICE_ACCOUNTS:-4}"
BROKER_HOSTNAMES="${BROKER_HOSTNAMES:-mosquitto}"
BROKER_PORT="${BROKER_PORT:-1883}"
BROKER_TLS_PORT="${BROKER_TLS_PORT:-8883}"
# The uid the thermoscreen images run as; it must be able to read its pool.
APP_UID="${APP_UID:-10001}"

log() { echo "broker-init: $*" >&2; }

if [ ! -f "$BROKER_DIR/mosquitto.conf" ]; then
    set --
    for name in $BROKER_HOSTNAMES; do set -- "$@" --hostname "$name"; done
    thermoscreen broker init --dir "$BROKER_DIR" --port "$BROKER_PORT" --tls-port "$BROKER_TLS_PORT" "$@" >/dev/null
    log "created the broker setup in $BROKER_DIR"
else
    log "broker setup in $BROKER_DIR exists; keeping it"
fi

password_of() { python3 -c 'import json, sys; print(json.load(sys.stdin)["password"])'; }

# provision POOL NAME COMMAND...: run `thermoscreen broker COMMAND` unless NAME already has a
# password file in POOL; --rotate when the account exists but its file was lost.
provision() {
    role_pool="$1"
    pool="$ACCOUNTS_DIR/$1"
    name="$2"
    shift 2
    file="$pool/$name.password"
    [ -s "$file" ] && return 0
    mkdir -p "$pool"
    if ! creds=$(thermoscreen broker "$@" --dir "$BROKER_DIR" 2>/dev/null); then
        creds=$(thermoscreen broker "$@" --dir "$BROKER_DIR" --rotate)
    fi
    umask 077
    printf '%s\n' "$creds" | password_of >"$file.tmp"
    mv "$file.tmp" "$file"
    log "account $name ready in pool $role_pool"
}

i=1
while [ "$i" -le "$INFERENCE_ACCOUNTS" ]; do
    provision inference "infer-$i" add-service inference "infer-$i"
    i=$((i + 1))
done
provision bridge bridge add-service bridge bridge
i=1
while [ "$i" -le "$DEVICE_ACCOUNTS" ]; do
    name=$(printf 'sim-%02d' "$i")
    provision devices "$name" add-device "$name"
    i=$((i + 1))
done

for pool in inference bridge devices; do
    cp "$BROKER_DIR/ca.crt" "$ACCOUNTS_DIR/$pool/ca.crt"
done
cp "$BROKER_DIR/site.key" "$ACCOUNTS_DIR/devices/site.key"
for pool in inference bridge devices; do
    chown -R "$APP_UID:$APP_UID" "$ACCOUNTS_DIR/$pool"
    chmod 0500 "$ACCOUNTS_DIR/$pool"
    find "$ACCOUNTS_DIR/$pool" -type f -exec chmod 0400 {} +
done
log "done: $INFERENCE_ACCOUNTS inference, 1 bridge and $DEVICE_ACCOUNTS device accounts"
