/* Unit tests for arvctl/migrate.c's parts without a server: file names,
 * checksums, directory listing. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "migrate.h"

Test(migrate, file_names)
{
    cr_assert(migrate_name_valid("0001_init.sql"));
    cr_assert(migrate_name_valid("0042_add_hourly_rollup2.sql"));
    cr_assert_not(migrate_name_valid("001_init.sql"));
    cr_assert_not(migrate_name_valid("0001-init.sql"));
    cr_assert_not(migrate_name_valid("0001_.sql"));
    cr_assert_not(migrate_name_valid("0001_Init.sql"));
    cr_assert_not(migrate_name_valid("0001_init.sql~"));
    cr_assert_not(migrate_name_valid("0001_init.SQL"));
    cr_assert_not(migrate_name_valid("abcd_init.sql"));
    cr_assert_not(migrate_name_valid("README.md"));
}

Test(migrate, sha256_checksum)
{
    char out[65];

    cr_assert_eq(migrate_checksum("abc", 3, out), 0);
    cr_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cr_assert_eq(migrate_checksum("", 0, out), 0);
    cr_assert_str_eq(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/arv-test-migrate-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void touch(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("SELECT 1;\n", f);
    fclose(f);
}

static void remove_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(migrate, lists_sorted_and_skips_others, .init = cr_redirect_stderr)
{
    char err[256];
    char **names = NULL;

    make_dir();
    touch("0010_later.sql");
    touch("0002_second.sql");
    touch("0001_first.sql");
    touch("notes.txt");
    touch("bad name.sql");
    int n = migrate_list(dir, &names, err, sizeof(err));
    cr_assert_eq(n, 3, "%s", err);
    cr_assert_str_eq(names[0], "0001_first.sql");
    cr_assert_str_eq(names[1], "0002_second.sql");
    cr_assert_str_eq(names[2], "0010_later.sql");
    migrate_list_free(names, n);
    remove_dir();
}

Test(migrate, refuses_two_files_with_one_number)
{
    char err[256];
    char **names = NULL;

    make_dir();
    touch("0002_api_keys.sql");
    touch("0002_other.sql");
    cr_assert_eq(migrate_list(dir, &names, err, sizeof(err)), -1);
    cr_assert_null(names);
    cr_assert(strstr(err, "share the number 0002"), "%s", err);
    remove_dir();
}

Test(migrate, missing_directory)
{
    char err[256];
    char **names = NULL;

    cr_assert_eq(migrate_list("/nonexistent/arv/migrations", &names, err, sizeof(err)), -1);
    cr_assert(strstr(err, "cannot open migrations directory"), "%s", err);
}
