#!/bin/sh
# simulated-cards.sh [SESSIONS] [SESSION_S] [GAP_S]: a card script for a simulated device.
#
# Six synthetic patient cards take turns: each session is one scan to start, another scan of
# the same card SESSION_S seconds later to end it, then GAP_S seconds until the next patient.
# Format (sensor_node/rfid.py): one scan per line, `UID DELAY_SECONDS`.
set -eu
sessions="${1:-1000}"
session_s="${2:-30}"
gap_s="${3:-15}"
i=0
while [ "$i" -lt "$sessions" ]; do
    uid=$(printf '04a1b2%02x' $((i % 6)))
    printf '%s %s\n%s %s\n' "$uid" "$gap_s" "$uid" "$session_s"
    i=$((i + 1))
done
