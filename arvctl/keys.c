/* arvctl keys: issue, list and revoke reporter API keys. Only the SHA-256 of a key
 * is stored; the key itself is printed once, on stdout, when it is created. */
#include "keys.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "api_key.h"
#include "cli.h"

#define KEYS_NAME_MAX 200

static const char keys_synopsis[] = "Usage: arvctl keys create --admin [--name NAME]\n"
                                    "       arvctl keys create --company ID [--name NAME]\n"
                                    "       arvctl keys list\n"
                                    "       arvctl keys revoke ID\n";

static const char keys_help_text[] =
    "\n"
    "create  issues a key and prints it alone on stdout: it is shown only this once\n"
    "        (only its SHA-256 is stored). An admin key reads every company; a\n"
    "        company key reads only that company's analytics.\n"
    "list    shows every key: id, prefix, scope, created, revoked, name.\n"
    "revoke  revokes key ID; the reporter refuses it within its auth cache TTL\n"
    "        (ARV_AUTH_CACHE_TTL, default 30 s).\n";

static int keys_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints "arvctl keys: <message>" and the usage to stderr; returns the usage exit code. */
static int keys_usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("arvctl keys: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n", stderr);
    fputs(keys_synopsis, stderr);
    return CLI_EXIT_USAGE;
}

static bool keys_name_ok(const char *name)
{
    size_t n = strlen(name);

    if (n == 0 || n > KEYS_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return false;
    }
    return true;
}

static int keys_create(const char *database_url, int argc, char **argv)
{
    bool admin = false;
    const char *company = NULL;
    const char *name = NULL;
    const struct cli_option opts[] = {
        {"admin", NULL, &admin}, {"company", &company, NULL}, {"name", &name, NULL}};
    char company_text[24] = "";
    char key[API_KEY_LEN + 1] = "";
    char hash[API_KEY_HASH_HEX_LEN + 1];
    char prefix[API_KEY_PREFIX_LEN + 1];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    const char *params[5];
    int rc = CLI_EXIT_FAILURE;

    if (!cli_options("keys create", argc, argv, 1, opts, sizeof(opts) / sizeof(opts[0]),
                     keys_synopsis, &rc))
        return rc;
    if (admin == (company != NULL))
        return keys_usage_error("create: give exactly one of --admin or --company ID");
    if (company &&
        !cli_id_param("keys create", "company", company, company_text, sizeof(company_text)))
        return CLI_EXIT_USAGE;
    if (name && !keys_name_ok(name))
        return keys_usage_error("create: --name must be 1-200 printable characters, got '%s'",
                                name);

    if (api_key_generate(key, sizeof(key)) < 0 || api_key_hash_hex(key, API_KEY_LEN, hash) < 0 ||
        api_key_prefix(key, prefix, sizeof(prefix)) < 0) {
        fprintf(stderr, "arvctl keys: cannot generate a key: the OpenSSL random generator "
                        "failed\n");
        goto out;
    }
    if (!(conn = cli_connect(database_url)))
        goto out;

    params[0] = hash;
    params[1] = prefix;
    params[2] = admin ? NULL : company_text;
    params[3] = admin ? "true" : "false";
    params[4] = name;
    res = PQexecParams(conn,
                       "INSERT INTO analytics.api_keys (key_hash, prefix, company_id, is_admin, "
                       "name) VALUES ($1, $2, $3::bigint, $4::boolean, $5) RETURNING id",
                       5, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        cli_report("cannot create the key", res, conn);
        goto out;
    }
    /* The key goes alone to stdout so `KEY=$(arvctl keys create ...)` works; the
     * human-facing note goes to stderr. */
    if (printf("%s\n", key) < 0 || fflush(stdout) != 0) {
        fprintf(stderr,
                "arvctl keys: created key %s but could not print it; revoke it with "
                "`arvctl keys revoke %s`\n",
                PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 0));
        goto out;
    }
    fprintf(stderr, "arvctl keys: created key %s (%s%s, prefix %s); it is shown only once\n",
            PQgetvalue(res, 0, 0), admin ? "admin" : "company:", company_text, prefix);
    rc = CLI_EXIT_OK;
out:
    OPENSSL_cleanse(key, sizeof(key));
    PQclear(res);
    PQfinish(conn);
    return rc;
}

static int keys_list(const char *database_url, int argc, char **argv)
{
    static const char *const headers[] = {"ID", "PREFIX", "SCOPE", "CREATED", "REVOKED", "NAME"};
    PGconn *conn = NULL;
    PGresult *res = NULL;
    int rc = CLI_EXIT_FAILURE;

    if (!cli_options("keys list", argc, argv, 1, NULL, 0, keys_synopsis, &rc))
        return rc;
    if (!(conn = cli_connect(database_url)))
        goto out;
    res = PQexec(conn, "SELECT id, prefix, "
                       "CASE WHEN is_admin THEN 'admin' ELSE 'company:' || company_id END, "
                       "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                       "coalesce(to_char(revoked_at AT TIME ZONE 'UTC', "
                       "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '-'), "
                       "coalesce(nullif(name, ''), '-') "
                       "FROM analytics.api_keys ORDER BY id");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        cli_report("cannot list keys", res, conn);
        goto out;
    }
    cli_print_table(stdout, res, headers);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "arvctl keys: cannot write the listing: %s\n", strerror(errno));
        goto out;
    }
    rc = CLI_EXIT_OK;
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}

/* revoked_at as the revoke messages print it. */
#define KEYS_SQL_AT "to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

static int keys_revoke(const char *database_url, int argc, char **argv)
{
    PGconn *conn = NULL;
    PGresult *res = NULL;
    long long id = 0;
    const char *params[1];
    int rc = CLI_EXIT_FAILURE;

    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(keys_synopsis, stdout);
        fputs(keys_help_text, stdout);
        return CLI_EXIT_OK;
    }
    if (argc != 2)
        return keys_usage_error("revoke: give exactly one key id");
    if (!cli_parse_id(argv[1], &id))
        return keys_usage_error("revoke: the key id must be a positive integer, got '%s'", argv[1]);
    if (!(conn = cli_connect(database_url)))
        goto out;
    params[0] = argv[1];
    /* Only a key not revoked yet is updated: a revoke that waited on another's
     * row lock checks again once it has it, so revoking twice, even at the
     * same time, keeps the first time. Then a statement of its own (a snapshot
     * taken after that revoke committed) tells when, or that no key has the id. */
    if (!(res = cli_query(
              conn,
              "UPDATE analytics.api_keys SET revoked_at = now() "
              "WHERE id = $1::bigint AND revoked_at IS NULL RETURNING prefix, " KEYS_SQL_AT,
              1, params, "cannot revoke the key")))
        goto out;
    if (PQntuples(res) == 1) {
        printf("revoked key %s (%s) at %s; the reporter refuses it within its auth cache TTL\n",
               argv[1], PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
        rc = CLI_EXIT_OK;
        goto out;
    }
    PQclear(res);
    if (!(res = cli_query(
              conn, "SELECT prefix, " KEYS_SQL_AT " FROM analytics.api_keys WHERE id = $1::bigint",
              1, params, "cannot read the key")))
        goto out;
    if (PQntuples(res) == 0) {
        fprintf(stderr, "arvctl keys: no key with id %s\n", argv[1]);
        goto out;
    }
    printf("key %s (%s) was already revoked at %s\n", argv[1], PQgetvalue(res, 0, 0),
           PQgetvalue(res, 0, 1));
    rc = CLI_EXIT_OK;
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}

int keys_command(const char *database_url, int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : NULL;

    if (!sub)
        return keys_usage_error("missing command");
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        fputs(keys_synopsis, stdout);
        fputs(keys_help_text, stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(sub, "create") == 0)
        return keys_create(database_url, argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return keys_list(database_url, argc - 1, argv + 1);
    if (strcmp(sub, "revoke") == 0)
        return keys_revoke(database_url, argc - 1, argv + 1);
    return keys_usage_error("unknown command '%s'", sub);
}
