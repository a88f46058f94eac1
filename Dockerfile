# The guardrail sidecar. Every dependency and the spaCy model come from the hash-locked
# requirements/lock.txt (`pip --require-hashes`); the project installs without resolving.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GUARDRAIL_POLICIES=/etc/guardrail/policies \
    GUARDRAIL_DATA_DIR=/var/lib/guardrail \
    # Inside a pod the app reaches the sidecar over the pod's shared network namespace;
    # the image listens on all interfaces of that namespace only when told to.
    GUARDRAIL_LISTEN=127.0.0.1:50051

WORKDIR /opt/guardrail
COPY pyproject.toml README.md ./
COPY requirements/ requirements/
COPY sidecar/ sidecar/
COPY audit/ audit/
RUN pip install --require-hashes -r requirements/lock.txt \
 && pip install --no-deps --no-build-isolation .

COPY policies/ /etc/guardrail/policies/
RUN useradd --system --uid 10001 --home-dir /var/lib/guardrail --create-home guardrail \
 && chmod 0700 /var/lib/guardrail \
 && chmod -R go-w /etc/guardrail
USER 10001

EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["guardrail", "health"]
ENTRYPOINT ["guardrail", "serve"]
