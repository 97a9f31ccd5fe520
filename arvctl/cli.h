/* What arvctl's subcommands share: option parsing, the blocking database
 * connection, error reporting and table output. */
#ifndef ARV_ARVCTL_CLI_H
#define ARV_ARVCTL_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <libpq-fe.h>

#define CLI_EXIT_OK      0
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE   2

/* One option of a subcommand: "--name VALUE", "--name=VALUE", or a bare
 * "--name" when `value` is NULL. */
struct cli_option {
    const char *name;   /* without the dashes */
    const char **value; /* receives the value (borrowed from argv); NULL: a flag */
    bool *present;      /* set when given; may be NULL */
};

enum cli_parse_result {
    CLI_PARSED, /* run the command */
    CLI_HELP,   /* --help was given: print the usage, exit 0 */
    CLI_BAD     /* a message was printed to stderr: exit CLI_EXIT_USAGE */
};

/* Parses argv[first..argc) against `opts`. Positional arguments are refused.
 * `cmd` ("content add") labels error messages. Pure apart from the message. */
enum cli_parse_result cli_parse(const char *cmd, int argc, char **argv, int first,
                                const struct cli_option *opts, size_t nopts);

/* cli_parse() with its outcome handled: true to run the command; false with
 * *exit_code set to CLI_EXIT_OK after printing `usage` for --help, or to
 * CLI_EXIT_USAGE after a bad option (the message is printed). */
bool cli_options(const char *cmd, int argc, char **argv, int first, const struct cli_option *opts,
                 size_t nopts, const char *usage, int *exit_code);

/* Parses a positive 64-bit id (1..2^63-1). */
bool cli_parse_id(const char *s, long long *out);

/* An id given as option --`flag` of `cmd`: writes it in canonical decimal into
 * `buf` (>= 21 bytes), for use as a query parameter. On a bad value prints
 * "arvctl <cmd>: --<flag>: '<s>' is not a positive integer" and returns false. */
bool cli_id_param(const char *cmd, const char *flag, const char *s, char *buf, size_t buflen);

/* Opens a blocking connection to `database_url` with quiet notices. Returns
 * NULL after printing "arvctl: cannot connect to PostgreSQL: ..." (one line).
 * Caller frees with PQfinish(). */
PGconn *cli_connect(const char *database_url);

/* Prints one line for a failed statement: "arvctl: <what>: <message>", with
 * the detail when PostgreSQL gives one and a hint when the schema is missing.
 * `res` may be NULL (then the connection's message is used). */
void cli_report(const char *what, const PGresult *res, const PGconn *conn);

/* cli_report() without the hint: for SQL that is not arvctl's own (a
 * migration file's statement may well miss a table of its own). */
void cli_report_error(const char *what, const PGresult *res, const PGconn *conn);

/* Runs `sql` with `n` text parameters (`params[i]` NULL is SQL NULL). Returns
 * the result when the statement succeeded, with rows or without; else reports
 * it as `what` (cli_report) and returns NULL. Caller clears the result. */
PGresult *cli_query(PGconn *conn, const char *sql, int n, const char *const *params,
                    const char *what);

/* Runs `sql` and returns true when it succeeded; else reports it as `what`. */
bool cli_exec(PGconn *conn, const char *sql, const char *what);

/* Prints `res` as an aligned text table with `headers` (one per column) on `out`. */
void cli_print_table(FILE *out, const PGresult *res, const char *const *headers);

#endif
