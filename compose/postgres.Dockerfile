# PostgreSQL 15 with the postgresql-hll extension, from Debian 12 packages.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        postgresql-15 postgresql-15-hll \
    && rm -rf /var/lib/apt/lists/*
USER postgres
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY --chown=postgres:postgres postgres-entrypoint.sh /usr/local/bin/
ENTRYPOINT ["postgres-entrypoint.sh"]
