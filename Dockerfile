# Interlink engine image: `interlink run` with the data directory on a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INTERLINK_DATA_DIR=/var/lib/interlink \
    INTERLINK_CONFIG=/etc/interlink/interlink.yaml

WORKDIR /opt/interlink
COPY pyproject.toml README.md ./
COPY engine ./engine
COPY channels ./channels
COPY profiles ./profiles
COPY mllp ./mllp
RUN pip install --no-cache-dir . \
    && useradd --system --home-dir /var/lib/interlink --shell /usr/sbin/nologin interlink \
    && mkdir -p /var/lib/interlink /etc/interlink \
    && chown interlink /var/lib/interlink

# The shipped engine file listens on loopback; in a container MLLP listens on all
# interfaces. The admin API and dashboard stay on loopback unless the site opens them with
# TLS (admin.interface and admin.tls in a mounted engine file); users are added with
# `docker exec … interlink users add NAME --role admin`.
# Channel files are the site's own: mount them on /etc/interlink/channels (the examples in
# conf/channels are for a developer's checkout and are not copied).
COPY conf/interlink.yaml /etc/interlink/
RUN sed -i '/^mllp:/,/^[a-z]/ s/^\(  interface:\) 127.0.0.1/\1 0.0.0.0/' /etc/interlink/interlink.yaml \
    && mkdir -p /etc/interlink/channels

USER interlink
VOLUME ["/var/lib/interlink"]
EXPOSE 2575 8575
STOPSIGNAL SIGTERM
ENTRYPOINT ["interlink"]
CMD ["run"]
