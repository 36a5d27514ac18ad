#!/bin/sh
# claim-account.sh TEMPLATE CONFIG -- COMMAND [ARGS...]
#
# Entry point of the thermoscreen containers: take one MQTT account of this role's pool
# ($ACCOUNT_DIR, written by broker-init.sh) that no other replica holds, render the component's
# config TEMPLATE into CONFIG (every @ACCOUNT@ becomes the account name, which is also the node
# or device id), put the password in $THERMOSCREEN_MQTT_PASSWORD and exec COMMAND.
#
# "Holds" is an flock on the account's password file, kept open (fd 9) by COMMAND for its whole
# life: the kernel releases it when the container stops, so a restarted or rescheduled replica
# can take the account again, and two live replicas never share one.
set -eu

ACCOUNT_DIR="${ACCOUNT_DIR:-/run/thermoscreen/account}"
if [ "$#" -lt 4 ] || [ "$3" != "--" ]; then
    echo "usage: claim-account.sh TEMPLATE CONFIG -- COMMAND [ARGS...]" >&2
    exit 2
fi
template="$1"
config="$2"
shift 3

for password_file in "$ACCOUNT_DIR"/*.password; do
    [ -e "$password_file" ] || break
    name=$(basename "$password_file" .password)
    exec 9<"$password_file"
    if flock -n 9; then
        THERMOSCREEN_MQTT_PASSWORD=$(cat "$password_file")
        THERMOSCREEN_ACCOUNT="$name"
        export THERMOSCREEN_MQTT_PASSWORD THERMOSCREEN_ACCOUNT
        sed "s/@ACCOUNT@/$name/g" "$template" >"$config"
        echo "claim-account: using account $name" >&2
        exec "$@"
    fi
    exec 9<&-
done
echo "claim-account: no free account in $ACCOUNT_DIR: every one is held by another replica" \
    "(raise the pool size and rerun broker-init, see docs/scaling.md)" >&2
exit 1
