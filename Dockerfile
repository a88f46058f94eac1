# The guardrail sidecar. Every dependency and the spaCy model come from the hash-locked
# requirements/lock.txt (`pip --require-hashes`); the project installs without resolving.
#
#   docker build -t guardrail-sidecar .                      base: the official slim Python
#   make image                                               base: Debian packages, offline
#
# BASE is any Debian bookworm image with Python 3.11 and its venv module (the version the
# lock files are compiled for). `make image` passes one made from Debian's own packages by
# scripts/make_base_image.sh, for machines that reach no container registry, and fills
# requirements/wheelhouse/ with the locked wheels (`pip download --require-hashes`) so the
# build installs them with --no-index: offline and reproducible. Without a wheelhouse the
# build downloads the same hash-pinned files from the package index.
ARG BASE=python:3.11.7-slim-bookworm

# ---- build: a virtual environment in /opt/guardrail, nothing else survives this stage
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/ requirements/
RUN python3 -m venv /opt/guardrail \
 && if ls requirements/wheelhouse/*.whl >/dev/null 2>&1; then \
        echo "installing from requirements/wheelhouse (offline)"; \
        /opt/guardrail/bin/pip install --no-index --find-links requirements/wheelhouse \
            --require-hashes -r requirements/lock.txt; \
    else \
        /opt/guardrail/bin/pip install --require-hashes -r requirements/lock.txt; \
    fi
COPY pyproject.toml README.md ./
COPY sidecar/ sidecar/
COPY audit/ audit/
# The project itself: no dependency resolution, no build isolation (setuptools is locked).
# Then pip goes: the final image installs nothing at run time.
RUN /opt/guardrail/bin/pip install --no-index --no-deps --no-build-isolation . \
 && /opt/guardrail/bin/python -m pip uninstall --yes --quiet pip \
 && rm -rf /src/build

# ---- final: the base, the environment, the policies, a non-root user
FROM ${BASE}
COPY --from=build /opt/guardrail /opt/guardrail
COPY policies/ /etc/guardrail/policies/

ENV PATH=/opt/guardrail/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GUARDRAIL_POLICIES=/etc/guardrail/policies \
    GUARDRAIL_DATA_DIR=/var/lib/guardrail \
    # Inside a pod the app reaches the sidecar over the pod's shared network namespace;
    # the image listens on all interfaces of that namespace only when told to.
    GUARDRAIL_LISTEN=127.0.0.1:50051

# The data directory and /run/guardrail (for a Unix socket shared with the app) belong
# to the sidecar's user; a fresh volume mounted there inherits that ownership. Nothing
# else is writable: the image runs with a read-only root filesystem (tmpfs on /tmp).
RUN groupadd --gid 10001 guardrail \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/guardrail \
        --no-create-home --shell /usr/sbin/nologin guardrail \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/guardrail \
 && install -d -o 10001 -g 10001 -m 0750 /run/guardrail \
 && chmod -R go-w /etc/guardrail
USER 10001:10001
WORKDIR /var/lib/guardrail

EXPOSE 50051
# SIGTERM drains: health turns NOT_SERVING, in-flight calls get GUARDRAIL_SHUTDOWN_GRACE
# (10 s), then the audit queue is flushed and a final checkpoint signed. Give `docker
# stop` more than Docker's default 10 s (`docker run --stop-timeout 30`, `docker stop -t 30`).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 \
  CMD ["guardrail", "health", "--timeout", "3"]
ENTRYPOINT ["guardrail", "serve"]
