/* Spins forever without calling the host: only epoch interruption stops it. */
#include <stdio.h>

int main(void) {
    volatile unsigned long n = 0;
    printf("spinning\n");
    fflush(stdout);
    for (;;) n++;
}
