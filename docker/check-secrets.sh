#!/bin/sh
# check-secrets.sh VAR...: the stack's `preflight` service; every other service waits for it.
#
# Refuses to let the stack start while a secret is empty, still one of the "change-me"
# placeholders of .env.example, or shorter than $MIN_SECRET_CHARS: Grafana and InfluxDB would
# otherwise come up with a password everyone who read the repository knows.
set -eu
MIN_SECRET_CHARS="${MIN_SECRET_CHARS:-16}"
bad=0
for var in "$@"; do
    eval "value=\${$var:-}"
    case "$value" in
        "") why="is empty" ;;
        *change-me* | *CHANGE-ME* | *changeme*) why="is still the placeholder from .env.example" ;;
        *) if [ "${#value}" -lt "$MIN_SECRET_CHARS" ]; then why="is shorter than $MIN_SECRET_CHARS characters"; else why=""; fi ;;
    esac
    if [ -n "$why" ]; then
        echo "preflight: $var $why; put a real secret in .env (e.g. \`openssl rand -hex 32\`)" >&2
        bad=1
    fi
done
[ "$bad" -eq 0 ] || exit 1
echo "preflight: secrets set" >&2
