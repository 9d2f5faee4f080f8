# syntax=docker/dockerfile:1
# Build stage: turn spotguard and its dependencies into wheels (build tools stay here).
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir --upgrade pip
COPY pyproject.toml README.md ./
COPY webhook ./webhook
COPY policies ./policies
COPY certs ./certs
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: only the wheels installed, a non-root user, gunicorn as the entrypoint
# (through `spotguard serve`, which configures gunicorn in code: gthread workers, TLS 1.2+).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links=/wheels spotguard \
    && rm -rf /wheels \
    && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin spotguard
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["spotguard", "serve", "--bind", "0.0.0.0:8443", "--cert-dir", "/etc/spotguard/certs"]
