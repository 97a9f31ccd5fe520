/* arvctl migrate: ordered SQL files, each applied once in a transaction with
 * its checksum row, under an advisory lock; refuses edited applied files. */
#include "migrate.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/evp.h>

#include "cli.h"
#include "timeutil.h"

#define MIGRATE_NAME_MAX 200

static const char migrate_usage[] =
    "Usage: arvctl migrate [--migrations-dir DIR]\n"
    "\n"
    "Applies the SQL files NNNN_name.sql of DIR (default: ARV_MIGRATIONS_DIR, else the\n"
    "source tree's migrations/) in name order. Each file runs once, in one transaction\n"
    "with its row in analytics.schema_migrations (version, SHA-256 checksum). A file\n"
    "changed after it was applied is an error. Concurrent runs wait for each other\n"
    "(advisory lock); a second run applies nothing.\n";

bool migrate_name_valid(const char *name)
{
    size_t n = strlen(name);

    if (n < 10 || n > MIGRATE_NAME_MAX || strcmp(name + n - 4, ".sql") != 0)
        return false;
    for (size_t i = 0; i < 4; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
    }
    if (name[4] != '_')
        return false;
    for (size_t i = 5; i < n - 4; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void migrate_list_free(char **names, int n)
{
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

int migrate_list(const char *dir, char ***names, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **list = NULL;
    int n = 0, cap = 0, rc = -1;

    *names = NULL;
    if (!d) {
        snprintf(err, errlen, "cannot open migrations directory %s: %s", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (!migrate_name_valid(de->d_name)) {
            if (len > 4 && strcmp(de->d_name + len - 4, ".sql") == 0)
                fprintf(stderr, "arvctl: warning: skipping %s/%s (not NNNN_name.sql)\n", dir,
                        de->d_name);
            continue;
        }
        if (n == cap) {
            int ncap = cap ? cap * 2 : 16;
            char **p = realloc(list, (size_t)ncap * sizeof(*p));
            if (!p)
                goto oom;
            list = p;
            cap = ncap;
        }
        if (!(list[n] = strdup(de->d_name)))
            goto oom;
        n++;
    }
    if (n > 1)
        qsort(list, (size_t)n, sizeof(*list), name_cmp);
    for (int i = 1; i < n; i++) {
        if (strncmp(list[i - 1], list[i], 4) == 0) {
            snprintf(err, errlen, "two migrations share the number %.4s: %s and %s", list[i],
                     list[i - 1], list[i]);
            goto out;
        }
    }
    *names = list;
    list = NULL;
    rc = n;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    closedir(d);
    migrate_list_free(list, n);
    return rc;
}

int migrate_checksum(const void *data, size_t len, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -EIO;
    for (unsigned int i = 0; i < mdlen; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

/* Reads a whole file into a new NUL-terminated buffer (caller frees). */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (!f)
        return NULL;
    for (;;) {
        if (cap - n < 4096) {
            char *p = realloc(buf, cap + 65536);
            if (!p) {
                free(buf);
                buf = NULL;
                goto out;
            }
            buf = p;
            cap += 65536;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[n] = '\0';
    *len = n;
out:
    fclose(f);
    return buf;
}

/* Line number of 1-based character position `pos` in UTF-8 `sql`. */
static int line_of(const char *sql, long pos)
{
    int line = 1;
    long chars = 0;

    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
        if ((*p & 0xC0) != 0x80 && ++chars >= pos)
            break;
        if (*p == '\n')
            line++;
    }
    return line;
}

/* Applies one file in a transaction together with its schema_migrations row.
 * Returns true on success; on failure prints why (with the line) and rolls back. */
static bool apply_one(PGconn *conn, const char *name, const char *version, const char *sql,
                      const char *checksum)
{
    const char *params[] = {version, checksum};
    PGresult *res = NULL;
    char what[MIGRATE_NAME_MAX + 64];
    bool ok = false;

    snprintf(what, sizeof(what), "migration %s failed", name);
    if (!cli_exec(conn, "BEGIN", what))
        return false;
    res = PQexec(conn, sql);
    /* A file of comments only (a placeholder) is an empty query: applied. */
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK &&
        PQresultStatus(res) != PGRES_EMPTY_QUERY) {
        const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
        if (pos)
            snprintf(what, sizeof(what), "migration %s failed at line %d", name,
                     line_of(sql, strtol(pos, NULL, 10)));
        cli_report_error(what, res, conn);
        goto out;
    }
    if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
        fprintf(stderr,
                "arvctl: migration %s ends the transaction itself (COMMIT/ROLLBACK): what ran "
                "before that may be committed, but the file is not recorded as applied; remove "
                "transaction control from migration files\n",
                name);
        goto out;
    }
    PQclear(res);
    if (!(res = cli_query(
              conn, "INSERT INTO analytics.schema_migrations (version, checksum) VALUES ($1, $2)",
              2, params, what)))
        goto out;
    ok = cli_exec(conn, "COMMIT", what);
out:
    PQclear(res);
    if (!ok && PQtransactionStatus(conn) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(conn, "ROLLBACK");
        PQclear(rb);
    }
    return ok;
}

/* True if one of the `n` file names is `version` + ".sql". */
static bool has_file(char **names, int n, const char *version)
{
    for (int i = 0; i < n; i++) {
        if (strlen(names[i]) == strlen(version) + 4 &&
            strncmp(names[i], version, strlen(version)) == 0)
            return true;
    }
    return false;
}

/* Runs every pending migration; returns the exit code. */
static int migrate_run(PGconn *conn, const char *dir, char **names, int n)
{
    PGresult *applied = NULL;
    PGresult *res = NULL;
    char *sql = NULL;
    int rc = CLI_EXIT_FAILURE, done = 0, skipped = 0;
    char lock_sql[128];

    snprintf(lock_sql, sizeof(lock_sql), "SELECT pg_try_advisory_lock(%lld)",
             (long long)MIGRATE_LOCK_KEY);
    res = PQexec(conn, lock_sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cli_report("cannot take the migration lock", res, conn);
        goto out;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        fprintf(stderr, "arvctl: another migration is running; waiting for it\n");
        snprintf(lock_sql, sizeof(lock_sql), "SELECT pg_advisory_lock(%lld)",
                 (long long)MIGRATE_LOCK_KEY);
        if (!cli_exec(conn, lock_sql, "cannot take the migration lock"))
            goto out;
    }
    if (!cli_exec(conn,
                  "CREATE SCHEMA IF NOT EXISTS analytics;"
                  " CREATE TABLE IF NOT EXISTS analytics.schema_migrations ("
                  " version text PRIMARY KEY, checksum text NOT NULL,"
                  " applied_at timestamptz NOT NULL DEFAULT now())",
                  "cannot create analytics.schema_migrations"))
        goto out;
    applied = PQexec(conn, "SELECT version, checksum FROM analytics.schema_migrations");
    if (PQresultStatus(applied) != PGRES_TUPLES_OK) {
        cli_report("cannot read analytics.schema_migrations", applied, conn);
        goto out;
    }

    for (int i = 0; i < n; i++) {
        char path[4096], version[MIGRATE_NAME_MAX], checksum[65];
        const char *recorded = NULL;
        double t0;
        size_t len = 0;

        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        snprintf(version, sizeof(version), "%.*s", (int)(strlen(names[i]) - 4), names[i]);
        free(sql);
        if (!(sql = read_file(path, &len))) {
            fprintf(stderr, "arvctl: cannot read %s: %s\n", path, strerror(errno));
            goto out;
        }
        if (migrate_checksum(sql, len, checksum) < 0) {
            fprintf(stderr, "arvctl: cannot compute the SHA-256 of %s\n", path);
            goto out;
        }
        for (int r = 0; r < PQntuples(applied); r++) {
            if (strcmp(PQgetvalue(applied, r, 0), version) == 0)
                recorded = PQgetvalue(applied, r, 1);
        }
        if (recorded) {
            if (strcmp(recorded, checksum) != 0) {
                fprintf(stderr,
                        "arvctl: migration %s was changed after it was applied (checksum %.12s, "
                        "recorded %.12s); add a new migration instead\n",
                        names[i], checksum, recorded);
                goto out;
            }
            skipped++;
            continue;
        }
        if (strlen(sql) != len) {
            fprintf(stderr, "arvctl: migration %s contains a NUL byte\n", names[i]);
            goto out;
        }
        /* Versions are file names: a renamed file would run a second time. */
        for (int r = 0; r < PQntuples(applied); r++) {
            const char *was = PQgetvalue(applied, r, 0);
            if (strcmp(PQgetvalue(applied, r, 1), checksum) == 0 && !has_file(names, n, was)) {
                fprintf(stderr,
                        "arvctl: migration %s is %s.sql renamed (the same contents, applied "
                        "already, and that file is gone): name it %s.sql again; versions are "
                        "file names\n",
                        names[i], was, was);
                goto out;
            }
        }
        t0 = timeutil_mono_s();
        if (!apply_one(conn, names[i], version, sql, checksum))
            goto out;
        printf("applied %s (%.0f ms)\n", names[i], (timeutil_mono_s() - t0) * 1e3);
        fflush(stdout);
        done++;
    }
    for (int r = 0; r < PQntuples(applied); r++) {
        if (!has_file(names, n, PQgetvalue(applied, r, 0)))
            fprintf(stderr, "arvctl: warning: applied migration %s has no file in %s\n",
                    PQgetvalue(applied, r, 0), dir);
    }
    if (done == 0)
        printf("database is up to date (%d migrations applied before)\n", skipped);
    else
        printf("%d migration%s applied, %d already applied\n", done, done == 1 ? "" : "s", skipped);
    rc = CLI_EXIT_OK;
out:
    free(sql);
    PQclear(res);
    PQclear(applied);
    return rc;
}

int migrate_command(const char *database_url, const char *dir, int argc, char **argv)
{
    const struct cli_option opts[] = {{"migrations-dir", &dir, NULL}};
    char err[512];
    char **names = NULL;
    PGconn *conn = NULL;
    int n, rc;

    if (!cli_options("migrate", argc, argv, 1, opts, 1, migrate_usage, &rc))
        return rc;
    n = migrate_list(dir, &names, err, sizeof(err));
    if (n < 0) {
        fprintf(stderr, "arvctl: %s\n", err);
        return CLI_EXIT_FAILURE;
    }
    if (n == 0) {
        fprintf(stderr, "arvctl: no migrations (NNNN_name.sql) in %s\n", dir);
        migrate_list_free(names, n);
        return CLI_EXIT_FAILURE;
    }
    conn = cli_connect(database_url);
    rc = conn ? migrate_run(conn, dir, names, n) : CLI_EXIT_FAILURE;
    if (conn)
        PQfinish(conn); /* also releases the advisory lock */
    migrate_list_free(names, n);
    return rc;
}
