# rfm-sync daemon image.
#   docker build -t rfm-sync .
#   docker run -d --name rfm-sync \
#     -v rfm-data:/data -v "$PWD/config.toml:/config/config.toml:ro" \
#     -e RFM_SYNC_SECRET_SHOPIFY_TOKEN=... -p 127.0.0.1:8787:8787 rfm-sync
# The config must put the store (and any sink files) under /data, e.g.
#   [store] url = "sqlite:////data/rfm-sync.sqlite"     [daemon] http_host = "0.0.0.0"
# Secrets come from the environment (RFM_SYNC_SECRET_<NAME>); none are baked into the image.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rfm_sync ./rfm_sync
COPY connectors ./connectors
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHON_KEYRING_BACKEND=keyring.backends.fail.Keyring
RUN groupadd --system --gid 10001 rfm \
 && useradd --system --uid 10001 --gid rfm --home-dir /data --shell /usr/sbin/nologin rfm \
 && mkdir -p /data /config \
 && chown rfm:rfm /data
COPY --from=build /install /usr/local
USER rfm
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8787
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=60s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/healthz', timeout=4)"]
ENTRYPOINT ["rfm-sync"]
CMD ["daemon", "-c", "/config/config.toml"]
