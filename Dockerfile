# Parley's image: `docker build -t parley .`, then `docker run parley serve --host 0.0.0.0`
# (the default), `parley api …`, `parley worker` or `parley db upgrade` (see compose.yaml and
# docs/deploy.md). Two stages: the first installs into a virtualenv, the second copies only
# that virtualenv onto a clean slim image and runs as an unprivileged user.

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/parley
WORKDIR /src
# Every dependency has a wheel for this Python (asyncpg, uvloop, httptools, cryptography,
# orjson), so no compiler is needed.
# constraints.txt pins every dependency to the versions CI tested and audited.
COPY pyproject.toml README.md constraints.txt ./
COPY parley ./parley
RUN /opt/parley/bin/pip install . -c constraints.txt && /opt/parley/bin/parley --help >/dev/null

FROM python:3.12-slim
ENV PATH=/opt/parley/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PARLEY_LOG_FORMAT=json
RUN useradd --system --uid 10001 --user-group --home-dir /data --create-home parley
COPY --from=build /opt/parley /opt/parley
USER parley
# `parley serve` keeps ./parley.db here unless DATABASE_URL says otherwise: mount a volume.
WORKDIR /data
VOLUME /data
EXPOSE 8000
# curl is not in the slim image; Python is. A worker serves no HTTP: compose.yaml turns this
# off for it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["parley"]
CMD ["serve", "--host", "0.0.0.0"]
