# policy-relay container: slim Python, non-root user, health check on /readyz.
# Build:  docker build -t policy-relay .
# Run:    see deploy/compose/ (Postfix in front) and docs/operations.md
# Nothing of an institution is baked in: mount the config at /etc/policy-relay/config.yaml, the pack
# at /etc/policy-relay/pack.yaml and the directory at /etc/policy-relay/directory.yaml (the paths of
# deploy/container/config.yaml); the store, the admin secret and the pid file live in the volume.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY relay ./relay
# The pinned versions of requirements.lock, so every build of one commit gets the same packages.
RUN pip install --no-cache-dir --root-user-action=ignore --prefix=/install -c requirements.lock .

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10025 --user-group --home-dir /var/lib/policy-relay --create-home \
        --shell /usr/sbin/nologin relay && mkdir -p /etc/policy-relay
COPY --from=build /install /usr/local
USER relay
WORKDIR /var/lib/policy-relay
VOLUME ["/var/lib/policy-relay"]
EXPOSE 10025 8025
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8025/readyz', timeout=4).status != 200)"]
ENTRYPOINT ["relay"]
# --init: the state volume is empty at the first start (the store and the admin secret are made)
CMD ["serve", "--init", "--config", "/etc/policy-relay/config.yaml"]
