/* Prints its arguments and the GREETING environment variable. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    const char *greeting = getenv("GREETING");
    printf("hello from wasm\n");
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    printf("GREETING=%s\n", greeting ? greeting : "(unset)");
    return 0;
}
