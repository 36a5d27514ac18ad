# An inference worker: the `inference` extra (LiteRT) and the shipped model; no TensorFlow.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ONLY_BINARY=:all:
WORKDIR /opt/thermoscreen
COPY . .
RUN pip install ".[inference]" \
    && python -c "import importlib.util as u, sys; sys.exit('inference image must not contain tensorflow' if u.find_spec('tensorflow') else 0)" \
    && python -c "from ai_edge_litert.interpreter import Interpreter" \
    && test -f contract/model/shipped/thermal/manifest.json \
    && install -m 0755 docker/claim-account.sh /usr/local/bin/claim-account \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /var/lib/thermoscreen thermoscreen
USER thermoscreen
ENTRYPOINT ["claim-account", "/etc/thermoscreen/inference.toml.in", "/tmp/inference.toml", "--"]
CMD ["thermoscreen", "infer", "--config", "/tmp/inference.toml"]
