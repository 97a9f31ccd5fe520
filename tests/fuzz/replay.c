/* Runs the fuzz target over the files named on the command line, without
 * libFuzzer: the normal (sanitized) build replays the seed corpus with it, and
 * links the fuzz target's source list, so a file missing from that list fails
 * every build rather than only the clang fuzz run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        uint8_t *data = NULL;
        long n;

        if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
            !(data = malloc((size_t)n + 1)) || fread(data, 1, (size_t)n, f) != (size_t)n) {
            fprintf(stderr, "fuzz_replay: cannot read %s\n", argv[i]);
            if (f)
                fclose(f);
            free(data);
            return 1;
        }
        fclose(f);
        LLVMFuzzerTestOneInput(data, (size_t)n);
        free(data);
    }
    printf("fuzz_replay: %d inputs\n", argc - 1);
    return 0;
}
