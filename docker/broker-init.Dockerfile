# One-shot broker provisioning (`thermoscreen broker init`, accounts): the `broker` extra only.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ONLY_BINARY=:all:
WORKDIR /opt/thermoscreen
COPY . .
RUN pip install ".[broker]" \
    && install -m 0755 docker/broker-init.sh /usr/local/bin/broker-init \
    && install -m 0755 docker/check-secrets.sh /usr/local/bin/check-secrets
# Runs as root: it writes the broker's files (Mosquitto runs as root inside its container)
# and hands each account pool to the uid the thermoscreen images run as (10001).
ENTRYPOINT ["broker-init"]
