# policy-relay container: slim Python, non-root user, health check on /readyz.
# Build:  docker build -t policy-relay .
# Run:    see deploy/compose/ (Postfix in front) and docs/operations.md
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY relay ./relay
RUN pip install --no-cache-dir --root-user-action=ignore --prefix=/install .

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10025 --user-group --home-dir /var/lib/policy-relay --create-home \
        --shell /usr/sbin/nologin relay
COPY --from=build /install /usr/local
COPY policies /etc/policy-relay/policies
COPY deploy/container/config.yaml /etc/policy-relay/config.yaml
# /etc/policy-relay/directory.yaml (the institution's people, lists, schedules) is mounted by the
# deployment; the store, the admin secret and the pid file live in the volume.
USER relay
WORKDIR /var/lib/policy-relay
VOLUME ["/var/lib/policy-relay"]
EXPOSE 10025 8025
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8025/readyz', timeout=4).status != 200)"]
ENTRYPOINT ["relay"]
CMD ["serve", "--config", "/etc/policy-relay/config.yaml"]
