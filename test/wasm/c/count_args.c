/* Prints how many arguments it got and the total of their lengths. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    size_t total = 0;
    for (int i = 1; i < argc; i++) total += strlen(argv[i]);
    printf("args=%d bytes=%zu\n", argc - 1, total);
    return 0;
}
