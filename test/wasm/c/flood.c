/* Writes argv[1] MiB (default 100) of 'x' lines to stdout, then a summary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 100;
    char line[1024];
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    for (long i = 0; i < mib * 1024; i++) fwrite(line, 1, sizeof line, stdout);
    fflush(stdout);
    fprintf(stderr, "wrote %ld MiB\n", mib);
    return 0;
}
