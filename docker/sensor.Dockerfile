# The screening device (Raspberry Pi or a simulated device): the `sensor` extra only.
# No TensorFlow and no LiteRT here, ever, and no RPi.GPIO / mfrc522 (our own MFRC522 driver runs on
# Blinka + gpiozero): the build fails if any got in. PIP_ONLY_BINARY: wheels only, the slim image
# has no compiler, so a dependency that would need one fails the build at once, by name.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ONLY_BINARY=:all:
WORKDIR /opt/thermoscreen
COPY . .
RUN pip install ".[sensor]" \
    && python -c "import importlib.util as u, sys; bad = [m for m in ('tensorflow', 'ai_edge_litert', 'RPi', 'mfrc522') if u.find_spec(m)]; sys.exit(f'sensor image must not contain {bad}' if bad else 0)" \
    && install -m 0755 docker/claim-account.sh /usr/local/bin/claim-account \
    && install -m 0755 docker/simulated-cards.sh /usr/local/bin/simulated-cards \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/thermoscreen thermoscreen \
    && install -d -o thermoscreen -g thermoscreen /var/lib/thermoscreen
USER thermoscreen
ENV XDG_STATE_HOME=/var/lib/thermoscreen
VOLUME ["/var/lib/thermoscreen"]
ENTRYPOINT ["claim-account", "/etc/thermoscreen/sensor.toml.in", "/tmp/sensor.toml", "--"]
CMD ["sh", "-c", "simulated-cards > /tmp/cards.txt && exec thermoscreen sensor --config /tmp/sensor.toml"]
