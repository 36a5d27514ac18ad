#!/usr/bin/env bash
# `system-deps.sh all` installs the servers and tools the tests start: Mosquitto, VictoriaMetrics
# (an InfluxDB-v2-write-compatible TSDB), Chromium (to check the HTML report), InfluxDB 1.x
# (InfluxQL for the dashboard queries), docker-compose (to validate docker-compose.yml).
# `system-deps.sh demo` installs only what the demo runs: Mosquitto. Debian only; elsewhere it
# names what to install and stops.
set -euo pipefail
what="${1:-all}"
case "$what" in all|demo) ;; *) echo "system-deps: unknown set '$what' (all or demo)" >&2; exit 2 ;; esac
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
if [ "$what" = "all" ]; then
command -v victoria-metrics >/dev/null 2>&1 || [ -x /usr/bin/victoria-metrics ] || need+=(victoria-metrics)
# InfluxDB 1.x runs every dashboard query (InfluxQL) in the tests; docker-compose validates docker-compose.yml.
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || need+=(docker-compose)
if [ "${THERMOSCREEN_SKIP_BROWSER:-0}" != "1" ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]}: install them with your package manager (Debian: apt-get install ${need[*]})" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
