/* Traps (unreachable) two calls deep, so the backtrace has frames to show. */
#include <stdio.h>

__attribute__((noinline)) static void explode(void) { __builtin_trap(); }
__attribute__((noinline)) void wasmpod_fixture_crash(void) { explode(); }

int main(void) {
    printf("about to trap\n");
    fflush(stdout);
    wasmpod_fixture_crash();
    return 0;
}
