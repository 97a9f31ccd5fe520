/* arvctl content add/list: the content registry analytics.ar_content. */
#include "content.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "cli.h"
#include "event.h"

#define CONTENT_UID_MAX 128

static const char content_usage[] =
    "Usage: arvctl content add --id ID [--unique-id UID] --project ID --company ID [--inactive]\n"
    "       arvctl content list [--company ID] [--project ID]\n"
    "\n"
    "add   registers content ID (or updates it: same id, new values) so that its events\n"
    "      are counted. --unique-id is the string id viewers may send instead\n"
    "      (ar_content_unique_id / portrait_id); left as it was when omitted.\n"
    "list  prints the registry as a table.\n";

/* A unique id an event can name: what the collector accepts in
 * ar_content_unique_id, at most CONTENT_UID_MAX bytes. */
static bool content_uid_ok(const char *uid)
{
    size_t n = strlen(uid);

    return n > 0 && n <= CONTENT_UID_MAX && event_text_ok(uid, n);
}

static int content_add(const char *database_url, int argc, char **argv)
{
    const char *id = NULL, *uid = NULL, *project = NULL, *company = NULL;
    bool inactive = false;
    const struct cli_option opts[] = {{"id", &id, NULL},
                                      {"unique-id", &uid, NULL},
                                      {"project", &project, NULL},
                                      {"company", &company, NULL},
                                      {"inactive", NULL, &inactive}};
    char ids[3][24];
    const char *params[5];
    PGconn *conn = NULL;
    PGresult *res = NULL;
    int rc = CLI_EXIT_FAILURE;

    if (!cli_options("content add", argc, argv, 2, opts, sizeof(opts) / sizeof(opts[0]),
                     content_usage, &rc))
        return rc;
    const char *const names[] = {"id", "project", "company"};
    const char *const values[] = {id, project, company};
    for (int i = 0; i < 3; i++) {
        if (!values[i]) {
            fprintf(stderr, "arvctl content add: --%s is required (see arvctl content --help)\n",
                    names[i]);
            return CLI_EXIT_USAGE;
        }
        if (!cli_id_param("content add", names[i], values[i], ids[i], sizeof(ids[i])))
            return CLI_EXIT_USAGE;
    }
    if (uid && !content_uid_ok(uid)) {
        fprintf(stderr,
                "arvctl content add: --unique-id must be 1..%d bytes of UTF-8 text without"
                " control characters (the collector refuses others: no event could name it)\n",
                CONTENT_UID_MAX);
        return CLI_EXIT_USAGE;
    }
    params[0] = ids[0];
    params[1] = uid;
    params[2] = ids[1];
    params[3] = ids[2];
    params[4] = inactive ? "f" : "t";

    if (!(conn = cli_connect(database_url)))
        goto out;
    res = PQexecParams(conn,
                       "INSERT INTO analytics.ar_content AS c"
                       " (id, unique_id, project_id, company_id, is_active)"
                       " VALUES ($1, $2, $3, $4, $5)"
                       " ON CONFLICT (id) DO UPDATE SET"
                       " unique_id = coalesce(EXCLUDED.unique_id, c.unique_id),"
                       " project_id = EXCLUDED.project_id, company_id = EXCLUDED.company_id,"
                       " is_active = EXCLUDED.is_active"
                       " RETURNING (xmax = 0), coalesce(unique_id, '')",
                       5, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        cli_report("cannot save content", res, conn);
        goto out;
    }
    printf("content %s %s: unique_id=%s project=%s company=%s active=%s\n", ids[0],
           strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? "added" : "updated",
           *PQgetvalue(res, 0, 1) ? PQgetvalue(res, 0, 1) : "-", ids[1], ids[2],
           inactive ? "no" : "yes");
    rc = CLI_EXIT_OK;
out:
    PQclear(res);
    if (conn)
        PQfinish(conn);
    return rc;
}

static int content_list(const char *database_url, int argc, char **argv)
{
    static const char *const headers[] = {"ID",      "UNIQUE_ID", "PROJECT",
                                          "COMPANY", "ACTIVE",    "CREATED_AT"};
    const char *company = NULL, *project = NULL;
    const struct cli_option opts[] = {{"company", &company, NULL}, {"project", &project, NULL}};
    char ids[2][24];
    const char *params[2] = {NULL, NULL};
    PGconn *conn = NULL;
    PGresult *res = NULL;
    int rc = CLI_EXIT_FAILURE;

    if (!cli_options("content list", argc, argv, 2, opts, 2, content_usage, &rc))
        return rc;
    if (company && !cli_id_param("content list", "company", company, ids[0], sizeof(ids[0])))
        return CLI_EXIT_USAGE;
    if (project && !cli_id_param("content list", "project", project, ids[1], sizeof(ids[1])))
        return CLI_EXIT_USAGE;
    params[0] = company ? ids[0] : NULL;
    params[1] = project ? ids[1] : NULL;
    if (!(conn = cli_connect(database_url)))
        goto out;
    if (!(res =
              cli_query(conn,
                        "SELECT id, coalesce(unique_id, ''), project_id, company_id,"
                        " CASE WHEN is_active THEN 'yes' ELSE 'no' END,"
                        " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
                        " FROM analytics.ar_content"
                        " WHERE ($1::bigint IS NULL OR company_id = $1)"
                        " AND ($2::bigint IS NULL OR project_id = $2)"
                        " ORDER BY id",
                        2, params, "cannot list content")))
        goto out;
    cli_print_table(stdout, res, headers);
    rc = CLI_EXIT_OK;
out:
    PQclear(res);
    if (conn)
        PQfinish(conn);
    return rc;
}

int content_command(const char *database_url, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(content_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "add") == 0)
        return content_add(database_url, argc, argv);
    if (strcmp(argv[1], "list") == 0)
        return content_list(database_url, argc, argv);
    fprintf(stderr, "arvctl content: unknown command '%s' (expected add or list)\n", argv[1]);
    return CLI_EXIT_USAGE;
}
