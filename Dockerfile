# syntax=docker/dockerfile:1
# kanshi in a container — mostly beside AWS accounts (CloudWatch, EC2 status, AWS
# Health, AWS runbooks), so the aws extra (boto3) is installed. docs/deploy.md has
# the whole story; in short:
#
#   docker build -t kanshi .
#   docker run -d --name kanshi --stop-timeout 90 \
#       --cap-drop ALL --security-opt no-new-privileges --read-only --tmpfs /tmp \
#       -e KANSHI_CONFIG=/etc/kanshi/container.yaml -e AWS_REGION=ap-northeast-1 \
#       -v kanshi-state:/var/lib/kanshi -p 127.0.0.1:9731:9731 kanshi
#
# Config: /etc/kanshi/kanshi.yaml — the embedded default (this host's ping and disks),
# replaced by mounting yours (-v ./kanshi.yaml:/etc/kanshi/kanshi.yaml:ro); the
# profiles and container.yaml stay beside it. Secrets come from the environment
# (${VAR} in the config), never from the image.
# State: the /var/lib/kanshi volume (SQLite store, alerts.jsonl). Keep it across
# upgrades: incidents, clocks and the agent's own downtime record live there.
# API and web page: port 9731. kanshi binds 127.0.0.1 by default, which is not
# reachable through -p: set `api: {listen: 0.0.0.0}` in the config (container.yaml
# shows it), publish the port on the host's loopback or behind a TLS proxy, and use
# a token.
# Ping: the non-root user pings with unprivileged ICMP sockets, which Docker (20.10+)
# and Podman allow by default (net.ipv4.ping_group_range); elsewhere add
# --sysctl net.ipv4.ping_group_range="0 2147483647". No capability is needed, so
# --cap-drop ALL is fine; without either kanshi reports ping as UNKNOWN, never down.
# Signals: tini is PID 1 (reaps the processes plugins and runbooks start, forwards
# SIGTERM); `docker stop` then stops kanshi cleanly — give it --stop-timeout 90 so
# running checks finish and notices in flight are sent.

# The base image, pinned to a patch release (pin its digest too in your registry:
# python:3.11.11-slim-bookworm@sha256:…). Build and runtime must match: the venv
# is copied between them.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: a wheel, then a venv with it and its dependencies -------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent agent
COPY checks checks
COPY notifiers notifiers
COPY runbooks runbooks
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
 && python -m venv /opt/kanshi \
 && wheel="$(echo /dist/kanshi-*.whl)" \
 && /opt/kanshi/bin/pip install --no-cache-dir "${wheel}[aws]" \
 && /opt/kanshi/bin/kanshi --version

# --- runtime: slim Debian, non-root, no compiler, no pip cache --------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kanshi" \
      org.opencontainers.image.description="Monitoring and alerting agent with leveled recovery runbooks"

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kanshi \
 && useradd --system --uid 10001 --gid kanshi --home-dir /var/lib/kanshi \
        --shell /usr/sbin/nologin kanshi \
 && install -d -o kanshi -g kanshi -m 0750 /var/lib/kanshi

COPY --from=build /opt/kanshi /opt/kanshi
COPY config/ /etc/kanshi/

ENV PATH=/opt/kanshi/bin:$PATH \
    KANSHI_CONFIG=/etc/kanshi/kanshi.yaml \
    KANSHI_STATE_DIR=/var/lib/kanshi \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /var/lib/kanshi
VOLUME ["/var/lib/kanshi"]
EXPOSE 9731

# `kanshi health` exits 0 while the agent's heartbeat (every agent.heartbeat, 30 s)
# is fresh and its process alive, 1 otherwise.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["kanshi", "health"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "kanshi"]
CMD ["run"]
