# credbroker: scoped, expiring object-store keys for Confluence automation.
#
#   docker build -t credbroker .
#   docker run -d --name credbroker -p 8080:8080 \
#     -v /etc/credbroker:/etc/credbroker:ro -v credbroker-state:/var/lib/credbroker credbroker
#
# The mounted /etc/credbroker/credbroker.yaml must set server.host: 0.0.0.0 (the default,
# 127.0.0.1, is unreachable from outside the container) and keep server.port at 8080 (the
# port EXPOSEd and probed below). Every file the broker writes (the rotation state, the audit
# log, the embedded store, the fallback's sealed cache) goes under /var/lib/credbroker, the only
# directory it writes to, unless the config names another place (CREDBROKER_STATE_DIR below:
# the defaults go there, not beside the read-only config). Secrets come in as files
# under /etc/credbroker (AppRole role_id / secret_id, sealing key) or as environment variables
# named by the config; never bake them into the image.
#
# Pin the base image by digest in production (python:3.11-slim@sha256:...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CREDBROKER_STATE_DIR=/var/lib/credbroker \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, unprivileged uid/gid, so mounted files can be owned by it (chown 10001).
RUN groupadd --system --gid 10001 credbroker \
 && useradd --system --uid 10001 --gid credbroker --no-create-home \
      --home-dir /var/lib/credbroker --shell /usr/sbin/nologin credbroker \
 && install -d -m 0750 -o credbroker -g credbroker /var/lib/credbroker \
 && install -d -m 0755 /etc/credbroker

# The dependencies first, exactly as locked (versions and sha256 hashes: scripts/lock.sh), in a
# layer of their own that a source change does not rebuild; then the project alone, --no-deps.
# Only what the package build needs (README.md: pyproject.toml names it as the readme).
WORKDIR /build
COPY requirements/app.lock.txt ./requirements/
RUN pip install --require-hashes -r requirements/app.lock.txt
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps . && rm -rf /build

WORKDIR /var/lib/credbroker
USER 10001:10001

EXPOSE 8080

# Liveness: `credbroker health` asks /healthz at the configured port, over HTTPS when the
# config serves TLS (with required client certificates: the TLS handshake). It does not call
# Vault or the object store; /readyz does (`credbroker health --ready`), and belongs in the
# orchestrator's readiness probe, not here.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["credbroker", "health", "--config", "/etc/credbroker/credbroker.yaml"]

ENTRYPOINT ["credbroker"]
CMD ["serve", "--config", "/etc/credbroker/credbroker.yaml"]
