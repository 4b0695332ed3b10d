# The operator image; also the job runner image (`python -m ray_operator.jobs`) of RayJobs.
# Build: docker build -t <registry>/ray-operator:0.1.0 .   (see charts/ray-operator/README.md)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package needs (see .dockerignore); no test extras. pip compiles the bytecode
# here, so the read-only root filesystem at run time costs nothing.
COPY pyproject.toml README.md /build/
COPY src /build/src
RUN pip install /build && rm -rf /build

# A fixed numeric uid (the chart's runAsUser) so runAsNonRoot can be checked without /etc/passwd.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin ray-operator
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080
ENTRYPOINT ["ray-operator", "run", "--liveness", "http://0.0.0.0:8080/healthz"]
