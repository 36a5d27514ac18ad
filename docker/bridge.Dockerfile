# The cloud bridge: the `bridge` extra (InfluxDB and Firestore clients) plus matplotlib for
# `thermoscreen report` (the `dashboards` extra). No TensorFlow, no LiteRT.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ONLY_BINARY=:all: \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /opt/thermoscreen
COPY . .
RUN pip install ".[bridge,dashboards]" \
    && python -c "import importlib.util as u, sys; bad = [m for m in ('tensorflow', 'ai_edge_litert') if u.find_spec(m)]; sys.exit(f'bridge image must not contain {bad}' if bad else 0)" \
    && install -m 0755 docker/claim-account.sh /usr/local/bin/claim-account \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/thermoscreen thermoscreen \
    && install -d -o thermoscreen -g thermoscreen /var/lib/thermoscreen
USER thermoscreen
WORKDIR /var/lib/thermoscreen
VOLUME ["/var/lib/thermoscreen"]
ENTRYPOINT ["claim-account", "/etc/thermoscreen/bridge.toml.in", "/tmp/bridge.toml", "--"]
CMD ["thermoscreen", "bridge", "--config", "/tmp/bridge.toml"]
