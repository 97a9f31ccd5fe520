/* arvctl keys: create, list and revoke reporter API keys (stored as SHA-256). */
#ifndef ARV_ARVCTL_KEYS_H
#define ARV_ARVCTL_KEYS_H

/* Runs `arvctl keys <create|list|revoke> ...` against `database_url` (borrowed).
 * argv[0] is "keys". Prints results on stdout, errors on stderr. Returns the
 * process exit code (0 ok, 1 failure, 2 usage). Blocking: a CLI. */
int keys_command(const char *database_url, int argc, char **argv);

#endif
