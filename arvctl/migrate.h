/* arvctl migrate: applies the ordered SQL files of a migrations directory, each
 * once, in its own transaction, recorded with its SHA-256 in
 * analytics.schema_migrations, under an advisory lock. */
#ifndef ARV_ARVCTL_MIGRATE_H
#define ARV_ARVCTL_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>

/* The advisory lock key every arvctl migrate takes ("ARVMIGR" in ASCII). */
#define MIGRATE_LOCK_KEY 0x4152564D494752LL

/* True when `name` is a migration file name: four digits, '_', a name of
 * [a-z0-9_], ".sql". Pure. */
bool migrate_name_valid(const char *name);

/* Lists the migration files of `dir` sorted by name into a new array of new
 * strings (caller frees with migrate_list_free()). Other files are skipped, a
 * .sql file with a bad name is reported on stderr. Returns the count, or -1
 * after writing why into `err` (missing directory, two files with one number). */
int migrate_list(const char *dir, char ***names, char *err, size_t errlen);

/* Frees what migrate_list() returned. NULL is fine. */
void migrate_list_free(char **names, int n);

/* Writes the lowercase hex SHA-256 of `data` into `out` (65 bytes). Returns 0
 * or -EIO. */
int migrate_checksum(const void *data, size_t len, char *out);

/* Runs `arvctl migrate [--migrations-dir DIR]`; argv[0] is "migrate", `dir`
 * the default directory (borrowed). Prints one line per applied migration and
 * a summary on stdout, errors on stderr. Returns the exit code. Blocking. */
int migrate_command(const char *database_url, const char *dir, int argc, char **argv);

#endif
