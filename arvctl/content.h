/* arvctl content: register AR content in analytics.ar_content (the registry the
 * aggregator resolves content -> project/company from) and list it. */
#ifndef ARV_ARVCTL_CONTENT_H
#define ARV_ARVCTL_CONTENT_H

/* Runs `arvctl content add|list ...` against `database_url` (borrowed); argv[0]
 * is "content". Prints results on stdout, errors on stderr. Returns the exit
 * code (0 ok, 1 failure, 2 usage). Blocking. */
int content_command(const char *database_url, int argc, char **argv);

#endif
