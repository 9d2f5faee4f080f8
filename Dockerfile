# syntax=docker/dockerfile:1
# spotguard's image, tagged with spotguard's version (the tag the manifests and the Helm
# chart use; `spotguard --version` prints it):
#
#   docker build -t spotguard:0.1.0 .
#
# For several architectures at once (amd64 and arm64 nodes: Graviton, Ampere), with
# docker buildx and a registry to push to:
#
#   docker buildx create --name spotguard --use        # once: a builder for other platforms
#   docker buildx build --platform linux/amd64,linux/arm64 \
#       -t <registry>/spotguard:0.1.0 --push .
#
# Nothing here is tied to one architecture: the base image is published for both, and the
# build stage runs on the target platform (emulated with QEMU where the host differs), so
# the wheels it builds, and any compiled dependency, match the runtime stage.
#
# Two stages. The build stage turns spotguard and its dependencies into wheels (pip,
# setuptools and any compiler a dependency might need stay there). The runtime stage
# installs only those wheels, through a bind mount so they never land in a layer, then
# removes pip, setuptools and wheel: nothing in the final image can build or install
# software. It runs as uid/gid 65532 (non-root; the manifests set the same), needs no
# writable path but /tmp (the manifests mount an emptyDir there and make the root
# filesystem read-only), and has no HEALTHCHECK: Kubernetes probes /readyz and /healthz.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY policies ./policies
COPY certs ./certs
RUN python -m pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only at run time, and pip already
# compiled every module at install time, so Python never tries to write .pyc files.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels spotguard \
    && python -m pip uninstall --yes setuptools wheel pip \
    && groupadd --gid 65532 spotguard \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin spotguard
USER 65532:65532
WORKDIR /
EXPOSE 8443 9090
# `spotguard serve` is the gunicorn master itself (PID 1: it handles SIGTERM with a graceful
# drain and reaps its gthread workers); the Deployment passes its own serve flags, the cert
# Job `certs ensure ...`. The default CMD serves on all interfaces with certificates from
# /etc/spotguard/certs (tls.crt, tls.key) and the built-in policy.
ENTRYPOINT ["spotguard"]
CMD ["serve", "--bind", "0.0.0.0:8443", "--cert-dir", "/etc/spotguard/certs"]
