# The operator image; also the job runner image (`python -m ray_operator.jobs`) of RayJobs.
#   docker build -t <registry>/ray-operator:0.1.0 .
# BASE is any image with Python 3.11+ and its venv module: the public python:3.11-slim by
# default; scripts/build-image.sh builds on a local Debian root filesystem (no registry there).
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/ray-operator/bin:$PATH

# Only what the package needs (see .dockerignore); no test extras. A virtualenv, so the same
# steps work on a distribution's Python (which refuses system-wide pip installs) and on the
# python image; pip compiles the bytecode here, so the read-only root filesystem costs nothing.
# Behind a TLS-intercepting proxy, pass its CA bundle (mounted into the build) as PIP_CERT.
ARG PIP_CERT
COPY pyproject.toml README.md /build/
COPY src /build/src
RUN python3 -m venv /opt/ray-operator \
    && /opt/ray-operator/bin/pip install --upgrade pip \
    && /opt/ray-operator/bin/pip install /build \
    && rm -rf /build

# A fixed numeric uid (the chart's runAsUser, the runner pod's too) so runAsNonRoot can be
# checked without reading /etc/passwd.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin ray-operator
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080
ENTRYPOINT ["ray-operator"]
CMD ["run"]
