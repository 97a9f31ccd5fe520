/* Shared pieces of arvctl's subcommands: options, connection, errors, tables. */
#include "cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_pool.h"

enum cli_parse_result cli_parse(const char *cmd, int argc, char **argv, int first,
                                const struct cli_option *opts, size_t nopts)
{
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i];
        const struct cli_option *opt = NULL;
        const char *name, *eq;
        size_t len;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
            return CLI_HELP;
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "arvctl %s: unexpected argument '%s' (see arvctl %s --help)\n", cmd,
                    arg, cmd);
            return CLI_BAD;
        }
        name = arg + 2;
        eq = strchr(name, '=');
        len = eq ? (size_t)(eq - name) : strlen(name);
        for (size_t k = 0; k < nopts; k++) {
            if (strlen(opts[k].name) == len && strncmp(opts[k].name, name, len) == 0)
                opt = &opts[k];
        }
        if (!opt) {
            fprintf(stderr, "arvctl %s: unknown option '%.*s' (see arvctl %s --help)\n", cmd,
                    (int)(len + 2), arg, cmd);
            return CLI_BAD;
        }
        if (!opt->value) {
            if (eq) {
                fprintf(stderr, "arvctl %s: option --%s takes no value\n", cmd, opt->name);
                return CLI_BAD;
            }
        } else if (eq) {
            *opt->value = eq + 1;
        } else if (i + 1 < argc) {
            *opt->value = argv[++i];
        } else {
            fprintf(stderr, "arvctl %s: option --%s needs a value\n", cmd, opt->name);
            return CLI_BAD;
        }
        if (opt->present)
            *opt->present = true;
    }
    return CLI_PARSED;
}

bool cli_options(const char *cmd, int argc, char **argv, int first, const struct cli_option *opts,
                 size_t nopts, const char *usage, int *exit_code)
{
    switch (cli_parse(cmd, argc, argv, first, opts, nopts)) {
    case CLI_PARSED:
        return true;
    case CLI_HELP:
        fputs(usage, stdout);
        *exit_code = CLI_EXIT_OK;
        return false;
    case CLI_BAD:
        break;
    }
    *exit_code = CLI_EXIT_USAGE;
    return false;
}

bool cli_parse_id(const char *s, long long *out)
{
    char *end = NULL;
    long long v;

    if (!s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0)
        return false;
    *out = v;
    return true;
}

bool cli_id_param(const char *cmd, const char *flag, const char *s, char *buf, size_t buflen)
{
    long long v;

    if (!cli_parse_id(s, &v)) {
        fprintf(stderr, "arvctl %s: --%s: '%s' is not a positive integer\n", cmd, flag, s);
        return false;
    }
    snprintf(buf, buflen, "%lld", v);
    return true;
}

/* Prints the first line of `msg` after the prefix. */
static void print_first_line(const char *prefix, const char *msg)
{
    size_t n = strcspn(msg, "\n");

    fprintf(stderr, "%s%.*s\n", prefix, (int)n, msg);
}

static void cli_notice(void *arg, const char *message)
{
    (void)arg;
    print_first_line("arvctl: notice: ", message);
}

PGconn *cli_connect(const char *database_url)
{
    /* The daemons' defaults (connect timeout, TCP keepalives and user
     * timeout), settings in the URL winning; and a session idle inside a
     * transaction 15 s ends: an arvctl stopped (Ctrl-Z) or cut off while it
     * holds a day's rebuild lock would otherwise hold up the aggregators'
     * writes of that day for as long as it stays so. */
    const char *keys[PG_CONN_PARAMS_MAX], *values[PG_CONN_PARAMS_MAX];
    pg_conn_params("arvctl", NULL, database_url, keys, values);
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    PGresult *res;

    if (!conn) {
        fprintf(stderr, "arvctl: out of memory\n");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        print_first_line("arvctl: cannot connect to PostgreSQL: ", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, cli_notice, NULL);
    /* Times are UTC and ISO whatever the server's or the database's defaults:
     * a partition bound written as text under another DateStyle and zone
     * could be read back hours away (migration 0013). */
    res =
        PQexec(conn, "SET client_min_messages = warning; SET TIME ZONE 'UTC'; SET DateStyle = ISO;"
                     " SET idle_in_transaction_session_timeout = 15000");
    PQclear(res);
    return conn;
}

void cli_report(const char *what, const PGresult *res, const PGconn *conn)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

    if (state && (strcmp(state, "42P01") == 0 || strcmp(state, "3F000") == 0)) {
        fprintf(stderr, "arvctl: %s: %s (run `arvctl migrate` first)\n", what,
                msg ? msg : "relation missing");
        return;
    }
    if (state && strcmp(state, "42703") == 0) { /* a column a later migration adds */
        fprintf(stderr,
                "arvctl: %s: %s (the schema may be older than this arvctl: run `arvctl"
                " migrate`)\n",
                what, msg ? msg : "column missing");
        return;
    }
    cli_report_error(what, res, conn);
}

void cli_report_error(const char *what, const PGresult *res, const PGconn *conn)
{
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;

    if (!msg)
        msg = res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    fprintf(stderr, "arvctl: %s: %.*s", what, (int)strcspn(msg, "\n"), msg);
    if (detail)
        fprintf(stderr, " (%.*s)", (int)strcspn(detail, "\n"), detail);
    fputc('\n', stderr);
}

PGresult *cli_query(PGconn *conn, const char *sql, int n, const char *const *params,
                    const char *what)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);

    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    cli_report(what, res, conn);
    PQclear(res);
    return NULL;
}

bool cli_exec(PGconn *conn, const char *sql, const char *what)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

    if (!ok)
        cli_report(what, res, conn);
    PQclear(res);
    return ok;
}

void cli_print_table(FILE *out, const PGresult *res, const char *const *headers)
{
    int ncols = PQnfields(res);
    int nrows = PQntuples(res);
    size_t *width = calloc((size_t)(ncols > 0 ? ncols : 1), sizeof(*width));

    if (!width)
        return;
    for (int c = 0; c < ncols; c++) {
        width[c] = strlen(headers[c]);
        for (int r = 0; r < nrows; r++) {
            size_t n = (size_t)PQgetlength(res, r, c);
            if (n > width[c])
                width[c] = n;
        }
    }
    for (int c = 0; c < ncols; c++) {
        if (c + 1 < ncols)
            fprintf(out, "%-*s  ", (int)width[c], headers[c]);
        else
            fprintf(out, "%s\n", headers[c]);
    }
    for (int r = 0; r < nrows; r++) {
        for (int c = 0; c < ncols; c++) {
            const char *v = PQgetisnull(res, r, c) ? "" : PQgetvalue(res, r, c);
            if (c + 1 < ncols)
                fprintf(out, "%-*s  ", (int)width[c], v);
            else
                fprintf(out, "%s\n", v);
        }
    }
    free(width);
}
