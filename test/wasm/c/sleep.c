/* Blocks in the host (a long sleep): a kill must end it all the same. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("sleeping\n");
    fflush(stdout);
    sleep(3600);
    return 0;
}
