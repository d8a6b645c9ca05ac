# The Sada worker: processors, sinks, HTTP API and /metrics in one process.
# Build: docker build -t sada .   Run against real infrastructure:
#   docker run sada run --bootstrap KAFKA:9092 --database postgresql+psycopg2://...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROMETHEUS_DISABLE_CREATED_SERIES=True \
    SADA_HTTP_HOST=0.0.0.0 \
    SADA_HTTP_PORT=6066 \
    SADA_DATA_DIR=/var/lib/sada

WORKDIR /src
# pipeline/, consumers/, producers/ and schemas/ are subpackages of `sada`
# (pyproject.toml maps them), so they are copied beside it.
COPY pyproject.toml README.md ./
COPY sada/ sada/
COPY pipeline/ pipeline/
COPY consumers/ consumers/
COPY producers/ producers/
COPY schemas/ schemas/
RUN pip install . \
    && cd / && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /var/lib/sada --shell /usr/sbin/nologin sada \
    && mkdir -p /var/lib/sada && chown sada:sada /var/lib/sada

WORKDIR /var/lib/sada
USER sada
VOLUME ["/var/lib/sada"]
EXPOSE 6066

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SADA_HTTP_PORT', '6066'), timeout=4)"

ENTRYPOINT ["sada"]
CMD ["run"]
