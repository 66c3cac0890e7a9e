/* Allocates and touches memory 1 MiB at a time until malloc fails, then
 * aborts as most language runtimes do when out of memory. With an argument
 * N it stops after N MiB and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    long stop = argc > 1 ? atol(argv[1]) : -1;
    long mib = 0;
    /* Line by line: abort() does not flush stdio. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("allocating 1 MiB at a time\n");
    /* Chained, so that the compiler cannot drop the allocations unused. */
    void *volatile head = NULL;
    for (;;) {
        if (mib == stop) {
            printf("allocated %ld MiB, done\n", mib);
            return 0;
        }
        char *p = malloc(1 << 20);
        if (!p) {
            fprintf(stderr, "malloc failed after %ld MiB\n", mib);
            abort();
        }
        memset(p, 1, 1 << 20);
        *(void **)p = head;
        head = p;
        mib++;
        if (mib % 16 == 0) printf("allocated %ld MiB\n", mib);
    }
}
