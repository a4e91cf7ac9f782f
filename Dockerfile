# kanshi in a container. Minimal for now: non-root, config and state as volumes,
# secrets from the environment. (Multi-stage build, HEALTHCHECK and the AWS-account
# use come with the deployment work.)
#
#   docker build -t kanshi .
#   docker run --rm -it --sysctl net.ipv4.ping_group_range="10001 10001" \
#       -v kanshi-state:/var/lib/kanshi kanshi
#
# Ping: the non-root user gets unprivileged ICMP sockets through the sysctl above
# (or run with --cap-add NET_RAW as root); without either kanshi says so and
# reports ping results as UNKNOWN, never as a down host.
FROM python:3.11-slim

RUN useradd --system --uid 10001 --home-dir /var/lib/kanshi kanshi \
 && mkdir -p /var/lib/kanshi /etc/kanshi \
 && chown kanshi:kanshi /var/lib/kanshi

WORKDIR /opt/kanshi
COPY pyproject.toml README.md ./
COPY agent agent
COPY checks checks
COPY notifiers notifiers
COPY runbooks runbooks
RUN pip install --no-cache-dir . && rm -rf /opt/kanshi

COPY config/ /etc/kanshi/
ENV KANSHI_CONFIG=/etc/kanshi/kanshi.yaml \
    KANSHI_STATE_DIR=/var/lib/kanshi
USER kanshi
WORKDIR /var/lib/kanshi
VOLUME ["/var/lib/kanshi"]
ENTRYPOINT ["kanshi"]
CMD ["run"]
