/* arvctl: the admin CLI (migrate, content, keys, dlq, rollups). Global options go anywhere on
 * the command line; everything else belongs to the subcommand. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "cli.h"
#include "config.h"
#include "content.h"
#include "dlq.h"
#include "keys.h"
#include "migrate.h"
#include "rollups.h"

struct arvctl_config {
    struct common_config common; /* database_url, redis/stream (dlq replay), env, logging */
    const char *migrations_dir;  /* ARV_MIGRATIONS_DIR */
    long raw_retention_days;     /* ARV_RAW_RETENTION_DAYS (rollups rebuild, dlq replay) */
    long dedupe_retention_days;  /* ARV_DEDUPE_RETENTION_DAYS (dlq replay) */
    long breakdown_max_values;   /* ARV_BREAKDOWN_MAX_VALUES (rollups rebuild) */
};

static const struct config_option arvctl_options[] = {
    {"database-url", "DATABASE_URL", CONFIG_STRING,
     offsetof(struct arvctl_config, common.database_url), "postgresql://arv@127.0.0.1:5432/arv",
     NULL, 0, 0, "PostgreSQL connection URL"},
    {"migrations-dir", "ARV_MIGRATIONS_DIR", CONFIG_STRING,
     offsetof(struct arvctl_config, migrations_dir), ARV_SOURCE_DIR "/migrations", NULL, 0, 0,
     "directory of NNNN_name.sql migration files"},
    {"raw-retention-days", "ARV_RAW_RETENTION_DAYS", CONFIG_INT,
     offsetof(struct arvctl_config, raw_retention_days), CONFIG_RAW_RETENTION_DAYS_DEFAULT, NULL, 1,
     100000,
     "the aggregators' raw retention: rollups rebuild skips older days, dlq replay older events"},
    {"dedupe-retention-days", "ARV_DEDUPE_RETENTION_DAYS", CONFIG_INT,
     offsetof(struct arvctl_config, dedupe_retention_days), CONFIG_DEDUPE_RETENTION_DAYS_DEFAULT,
     NULL, 0, 100000,
     "the aggregators' dedupe window (0: ARV_RAW_RETENTION_DAYS): dlq replay skips older events"
     " unless --force"},
    {"breakdown-max-values", "ARV_BREAKDOWN_MAX_VALUES", CONFIG_INT,
     offsetof(struct arvctl_config, breakdown_max_values), CONFIG_BREAKDOWN_MAX_VALUES_DEFAULT,
     NULL, 0, 1000000,
     "the aggregators' breakdown cap: rollups rebuild keeps the values with the most views, the"
     " rest as (other) (0: every value)"},
    {"env", "ARV_ENV", CONFIG_CHOICE, offsetof(struct arvctl_config, common.env), "development",
     "development|production", 0, 0, "deployment environment"},
    {"log-format", "ARV_LOG_FORMAT", CONFIG_CHOICE,
     offsetof(struct arvctl_config, common.log_format), NULL, "json|console", 0, 0,
     "log format (default: json in production, else console)"},
    {"log-level", "ARV_LOG_LEVEL", CONFIG_LOG_LEVEL,
     offsetof(struct arvctl_config, common.log_level), "warn", NULL, 0, 0,
     "minimum log level: debug|info|warn|error"},
    CONFIG_REDIS_OPTIONS(struct arvctl_config),
};
#define ARVCTL_NOPTIONS (sizeof(arvctl_options) / sizeof(arvctl_options[0]))

static const char arvctl_summary[] =
    "       arvctl [options] COMMAND [command options]\n"
    "Administers ARV Analytics.\n"
    "\n"
    "Commands:\n"
    "  migrate [--migrations-dir DIR]      apply pending SQL migrations\n"
    "  content add --id ID [--unique-id UID] --project ID --company ID [--inactive]\n"
    "  content list [--company ID] [--project ID]\n"
    "  keys create --admin | --company ID [--name NAME]\n"
    "  keys list | keys revoke ID          reporter API keys\n"
    "  dlq list [--reason R] [--limit N] [--json]\n"
    "  dlq replay (--id ID | --reason R) [--stream NAME] [--force]   re-append dead letters\n"
    "  rollups rebuild --from YYYY-MM-DD --to YYYY-MM-DD   recompute rollups from raw\n"
    "Exit status: 0 ok, 1 failure, 2 usage error. `arvctl COMMAND --help` for more.";

static bool arvctl_validate(const void *p, char *err, size_t errlen)
{
    const struct arvctl_config *cfg = p;
    return config_check_urls(&cfg->common, true, 64, true, err, errlen);
}

/* The global option named by "--name[=value]", or NULL. */
static const struct config_option *global_option(const char *arg)
{
    const char *name;
    size_t len;

    if (strncmp(arg, "--", 2) != 0)
        return NULL;
    name = arg + 2;
    len = strcspn(name, "=");
    for (size_t i = 0; i < ARVCTL_NOPTIONS; i++) {
        if (strlen(arvctl_options[i].flag) == len &&
            strncmp(arvctl_options[i].flag, name, len) == 0)
            return &arvctl_options[i];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    struct arvctl_config cfg = {0};
    char **gargv = calloc((size_t)argc + 1, sizeof(*gargv));
    char **sargv = calloc((size_t)argc + 1, sizeof(*sargv));
    int gargc = 0, sargc = 0, rc = CLI_EXIT_USAGE;

    /* Output piped into `head` that exits: the command finishes what it
     * does (a replay marks what it sent; a key made is reported as not
     * printed) rather than dying half-way at its next line. */
    signal(SIGPIPE, SIG_IGN);
    if (!gargv || !sargv) {
        fprintf(stderr, "arvctl: out of memory\n");
        rc = CLI_EXIT_FAILURE;
        goto out;
    }
    /* Split: global options (anywhere) and, before the command, --help,
     * --version, --check-config go to the config loader; the rest to the command. */
    gargv[gargc++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const struct config_option *opt = global_option(arg);
        if (opt) {
            gargv[gargc++] = argv[i];
            if (!strchr(arg, '=') && i + 1 < argc)
                gargv[gargc++] = argv[++i];
        } else if (sargc == 0 && arg[0] == '-') {
            if (!config_builtin_flag(arg)) {
                fprintf(stderr, "arvctl: unknown option '%s' (see arvctl --help)\n", arg);
                goto out;
            }
            gargv[gargc++] = argv[i];
        } else {
            sargv[sargc++] = argv[i];
        }
    }
    /* A bad value is a usage error (2), but --check-config answers 0 or 1,
     * as every binary's does. */
    bool check_only = false;
    for (int i = 0; i < gargc; i++)
        check_only = check_only || strcmp(gargv[i], "--check-config") == 0;
    config_load_or_exit("arvctl", arvctl_summary, arvctl_options, ARVCTL_NOPTIONS, &cfg,
                        &cfg.common, arvctl_validate,
                        check_only ? CLI_EXIT_FAILURE : CLI_EXIT_USAGE, gargc, gargv);

    if (sargc == 0) {
        fprintf(stderr, "arvctl: missing command: migrate, content, keys, dlq or rollups"
                        " (see arvctl --help)\n");
    } else if (strcmp(sargv[0], "migrate") == 0) {
        rc = migrate_command(cfg.common.database_url, cfg.migrations_dir, sargc, sargv);
    } else if (strcmp(sargv[0], "content") == 0) {
        rc = content_command(cfg.common.database_url, sargc, sargv);
    } else if (strcmp(sargv[0], "keys") == 0) {
        rc = keys_command(cfg.common.database_url, sargc, sargv);
    } else if (strcmp(sargv[0], "dlq") == 0) {
        const struct dlq_target target = {cfg.common.redis_url, cfg.common.stream,
                                          cfg.common.stream_shards, cfg.dedupe_retention_days,
                                          cfg.raw_retention_days};
        rc = dlq_command(cfg.common.database_url, &target, sargc, sargv);
    } else if (strcmp(sargv[0], "rollups") == 0) {
        const struct rollups_options opts = {cfg.raw_retention_days, cfg.breakdown_max_values};
        rc = rollups_command(cfg.common.database_url, &opts, sargc, sargv);
    } else {
        fprintf(stderr, "arvctl: unknown command '%s' (see arvctl --help)\n", sargv[0]);
    }
out:
    free(gargv);
    free(sargv);
    return rc;
}
