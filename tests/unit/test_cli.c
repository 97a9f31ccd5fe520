/* Unit tests for arvctl/cli.c: subcommand option parsing and ids. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <string.h>

#include "cli.h"

static const char *id, *name;
static bool flag;

static enum cli_parse_result parse(int argc, char **argv)
{
    const struct cli_option opts[] = {
        {"id", &id, NULL}, {"name", &name, NULL}, {"flag", NULL, &flag}};
    id = name = NULL;
    flag = false;
    return cli_parse("test", argc, argv, 1, opts, 3);
}

Test(cli, values_in_both_forms_and_flags)
{
    char *argv[] = {"cmd", "--id", "42", "--name=x y", "--flag"};

    cr_assert_eq(parse(5, argv), CLI_PARSED);
    cr_assert_str_eq(id, "42");
    cr_assert_str_eq(name, "x y");
    cr_assert(flag);
}

Test(cli, errors, .init = cr_redirect_stderr)
{
    char *unknown[] = {"cmd", "--nope", "1"};
    char *missing[] = {"cmd", "--id"};
    char *positional[] = {"cmd", "extra"};
    char *flag_value[] = {"cmd", "--flag=1"};

    cr_assert_eq(parse(3, unknown), CLI_BAD);
    cr_assert_eq(parse(2, missing), CLI_BAD);
    cr_assert_eq(parse(2, positional), CLI_BAD);
    cr_assert_eq(parse(2, flag_value), CLI_BAD);
}

Test(cli, help)
{
    char *argv[] = {"cmd", "--id", "1", "--help"};

    cr_assert_eq(parse(4, argv), CLI_HELP);
}

static void redirect_both(void)
{
    cr_redirect_stdout();
    cr_redirect_stderr();
}

Test(cli, options_turn_the_outcome_into_an_exit_code, .init = redirect_both)
{
    const struct cli_option opts[] = {{"id", &id, NULL}};
    char *run[] = {"cmd", "--id", "7"};
    char *help[] = {"cmd", "--help"};
    char *bad[] = {"cmd", "--nope"};
    int code = -1;

    cr_assert(cli_options("test", 3, run, 1, opts, 1, "usage: test\n", &code));
    cr_assert_eq(code, -1, "untouched when the command runs");
    cr_assert_not(cli_options("test", 2, help, 1, opts, 1, "usage: test\n", &code));
    cr_assert_eq(code, CLI_EXIT_OK);
    fflush(stdout);
    cr_assert_stdout_eq_str("usage: test\n");
    cr_assert_not(cli_options("test", 2, bad, 1, opts, 1, "usage: test\n", &code));
    cr_assert_eq(code, CLI_EXIT_USAGE);
}

Test(cli, ids)
{
    long long v;

    cr_assert(cli_parse_id("42", &v));
    cr_assert_eq(v, 42);
    cr_assert(cli_parse_id("9223372036854775807", &v));
    cr_assert_not(cli_parse_id("0", &v));
    cr_assert_not(cli_parse_id("-1", &v));
    cr_assert_not(cli_parse_id("12a", &v));
    cr_assert_not(cli_parse_id("", &v));
    cr_assert_not(cli_parse_id(" 1", &v));
    cr_assert_not(cli_parse_id("9223372036854775808", &v));
}
