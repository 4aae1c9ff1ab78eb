# The flrepo API image (aeros/fl_repository drop-in). Stage one builds wheels for the project and its
# runtime dependencies and installs them into a virtualenv; the runtime stage copies only that
# virtualenv onto a clean slim base, so no compiler, wheel cache, test or dev dependency reaches it.
# Works with BuildKit and with the classic builder of docker-compose v1 (the aerOS command).
#
#   docker build -t aeros/fl_repository:latest .
#   docker run -p 9013:9012 -e FLREPO_MONGODB_URL=mongodb://user:pass@db:27017 aeros/fl_repository:latest
#
# Python packages install at the versions in constraints.txt (`make constraints` writes it from the
# dependency set the tests ran with), so two builds of one commit get the same versions.
# For bit-for-bit rebuilds pin the base by digest too: --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel needs (README.md is the package's long description); see .dockerignore.
COPY pyproject.toml README.md constraints.txt ./
COPY app ./app
# Only the `server` extra (the REST service); test, fl and dev are not built or installed.
RUN pip wheel --wheel-dir /wheels -c constraints.txt '.[server]' \
 && python -m venv /opt/flrepo \
 && /opt/flrepo/bin/pip install --no-index --find-links=/wheels 'flrepo[server]' \
 && /opt/flrepo/bin/pip uninstall --yes pip \
 && find /opt/flrepo -name '__pycache__' -prune -exec rm -rf {} +

# Training collectors and local executions (`docker build --target fl .`): the same package with
# its `fl` extra (Flower, NumPy models, CSV/Parquet/NPZ data). For PyTorch or Keras models:
# `--build-arg FL_EXTRAS=pytorch` or `FL_EXTRAS=pytorch,keras` (torch adds ~5 GB). Not part of the API image.
FROM ${PYTHON_IMAGE} AS fl
ARG UID=10001
ARG FL_EXTRAS=fl
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY app ./app
RUN python -m venv /opt/flrepo \
 && /opt/flrepo/bin/pip install -c constraints.txt ".[${FL_EXTRAS}]" \
 && /opt/flrepo/bin/pip uninstall --yes pip \
 && rm -rf /src \
 && groupadd --system --gid "${UID}" flrepo \
 && useradd --system --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin flrepo
ENV PATH=/opt/flrepo/bin:$PATH PYTHONUNBUFFERED=1 FLWR_TELEMETRY_ENABLED=0
USER ${UID}:${UID}
WORKDIR /tmp
ENTRYPOINT ["flrepo"]

# The API image: the last stage, so a plain `docker build .` (and compose's `build: .`) makes it.
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
LABEL org.opencontainers.image.title="flrepo" \
      org.opencontainers.image.description="FL Repository: ML models, training results, FL strategies and data transformations on MongoDB + GridFS (aerOS compatible)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid "${UID}" flrepo \
 && useradd --system --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin flrepo
COPY --from=build /opt/flrepo /opt/flrepo
ENV PATH=/opt/flrepo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLREPO_HOST=0.0.0.0 \
    FLREPO_PORT=9012 \
    FORWARDED_ALLOW_IPS="*"
# FORWARDED_ALLOW_IPS: the container is only reached through Docker's port mapping or a Kubernetes
# Service/Ingress, whose X-Forwarded-* headers uvicorn (run with proxy headers) should honour.
# A numeric user, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER ${UID}:${UID}
WORKDIR /tmp
EXPOSE 9012
# /health does not touch the database: healthy as soon as the API answers. Python rather than curl:
# the slim base has no curl, and adding it would grow the image for a probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('FLREPO_PORT', '9012') + '/health', timeout=4)"]
# Settings come from FLREPO_* variables (docker-compose.yml; the Helm chart's ConfigMap and Secret).
CMD ["flrepo", "serve"]
