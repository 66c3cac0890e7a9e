// A WASI preview 1 reactor, as toolchains that build libraries emit it: no
// main and no _start, an _initialize that runs the constructors, a default
// export (the function named "") and named exports. Built as a module and,
// with the `library` world of wasmpod-fixtures, as a component.
#include <stdio.h>

static int initialized;

__attribute__((constructor)) static void init(void) { initialized = 42; }

// Reactors have no exit to flush stdio: each export flushes its own output.
__attribute__((export_name(""))) void run_default(void) {
    printf("default export ran after _initialize (%d)\n", initialized);
    fflush(stdout);
}

__attribute__((export_name("greet"))) void greet(void) {
    printf("greet ran after _initialize (%d)\n", initialized);
    fflush(stdout);
}

// `result` in the component: 1 is its error case.
__attribute__((export_name("fail"))) int fail(void) { return 1; }

// Takes parameters, which an entrypoint cannot give: refused.
__attribute__((export_name("add"))) int add(int a, int b) { return a + b; }
