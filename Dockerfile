# SkyTwin's always-on core. Built by compose.yaml; configured through SKYTWIN_* variables.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SKYTWIN_HOME=/var/lib/skytwin \
    SKYTWIN_BIND=0.0.0.0:8080 \
    SKYTWIN_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY skytwin ./skytwin
RUN pip install . \
    && useradd --system --home-dir /var/lib/skytwin --create-home skytwin

USER skytwin
EXPOSE 8080
# The health check itself lives in compose.yaml, next to the port it probes.
CMD ["python", "-m", "skytwin", "run"]
