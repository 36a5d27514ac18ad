#!/bin/sh
# One-shot broker provisioning for the compose stack (the `broker-init` service).
#
# Idempotent: the first run creates the broker directory (`thermoscreen broker init`: config,
# CA, server certificate, password file, ACL, site key); every run then makes sure each pooled
# account has a password file in its role's pool. Existing accounts keep their passwords.
#
# Two broker directories: $BROKER_DIR (only this one-shot container mounts it) holds the CA key,
# the site key and the account registry; $RUNTIME_DIR (what Mosquitto mounts) gets only what
# the broker reads: its config, the certificates, server.key, the password file and the ACL.
#
# Pools (one volume per role, mounted read-only by that role's containers):
#   $ACCOUNTS_DIR/inference/infer-1..N.password   N = $INFERENCE_ACCOUNTS
#   $ACCOUNTS_DIR/bridge/bridge.password
#   $ACCOUNTS_DIR/devices/sim-NN/sim-NN.password  NN = 01..$DEVICE_ACCOUNTS, one volume each
#                                                 (+ site.key): a device sees no other device
# plus ca.crt in every pool. A container claims one account of its pool at start
# (claim-account.sh), so `docker compose up --scale inference=3` gives each replica its own
# account and node id.
set -eu

BROKER_DIR="${BROKER_DIR:-/broker-admin}"
RUNTIME_DIR="${RUNTIME_DIR:-/broker}"
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
    thermoscreen broker init --dir "$BROKER_DIR" --conf-dir "$RUNTIME_DIR" --port "$BROKER_PORT" --tls-port "$BROKER_TLS_PORT" "$@" >/dev/null
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
    provision "devices/$name" "$name" add-device "$name"
    cp "$BROKER_DIR/ca.crt" "$BROKER_DIR/site.key" "$ACCOUNTS_DIR/devices/$name/"
    i=$((i + 1))
done

for pool in inference bridge; do
    cp "$BROKER_DIR/ca.crt" "$ACCOUNTS_DIR/$pool/ca.crt"
done
for pool in inference bridge devices; do
    chown -R "$APP_UID:$APP_UID" "$ACCOUNTS_DIR/$pool"
    find "$ACCOUNTS_DIR/$pool" -type d -exec chmod 0500 {} +
    find "$ACCOUNTS_DIR/$pool" -type f -exec chmod 0400 {} +
done

# What Mosquitto may see; never ca.key, site.key or the registry.
umask 077
mkdir -p "$RUNTIME_DIR/data"
chmod 0700 "$RUNTIME_DIR" "$RUNTIME_DIR/data"
for name in mosquitto.conf ca.crt server.crt server.key passwords acl; do
    cp -p "$BROKER_DIR/$name" "$RUNTIME_DIR/$name.tmp"
    mv "$RUNTIME_DIR/$name.tmp" "$RUNTIME_DIR/$name"
done
log "done: $INFERENCE_ACCOUNTS inference, 1 bridge and $DEVICE_ACCOUNTS device accounts"
