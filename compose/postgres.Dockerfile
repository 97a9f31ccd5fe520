# PostgreSQL 15 with the postgresql-hll extension, from Debian 12 packages.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        postgresql-15 postgresql-15-hll \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
# The data folder exists in the image, owned by postgres: a new named volume
# mounted there takes its owner (a folder Docker made itself would be root's,
# and initdb, as postgres, could not use it).
USER postgres
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY --chown=postgres:postgres postgres-entrypoint.sh /usr/local/bin/
ENTRYPOINT ["postgres-entrypoint.sh"]
