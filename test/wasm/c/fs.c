/* Runs file operations named on the command line and prints one line for
 * each, so a test can see what a guest may and may not touch:
 *
 *   fs.wasm cat PATH | write PATH TEXT | symlink TARGET LINK | ls DIR ...
 *
 * Each line is "OP PATH: ok ..." or "OP PATH: error STRERROR". The exit
 * status is 0 even when operations fail: failing is what is tested. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void cat(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("cat %s: error %s\n", path, strerror(errno));
        return;
    }
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    while (n > 0 && buf[n - 1] == '\n') buf[--n] = 0;
    fclose(f);
    printf("cat %s: ok %s\n", path, buf);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) {
        printf("write %s: error %s\n", path, strerror(errno));
        return;
    }
    int failed = fputs(text, f) < 0;
    failed |= fclose(f) != 0;
    printf("write %s: %s\n", path, failed ? "error short write" : "ok");
}

static void make_symlink(const char *target, const char *link) {
    if (symlink(target, link) != 0)
        printf("symlink %s: error %s\n", link, strerror(errno));
    else
        printf("symlink %s: ok\n", link);
}

static void ls(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        printf("ls %s: error %s\n", path, strerror(errno));
        return;
    }
    printf("ls %s: ok", path);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) printf(" %s", e->d_name);
    printf("\n");
    closedir(d);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *op = argv[i];
        if (strcmp(op, "cat") == 0 && i + 1 < argc) {
            cat(argv[++i]);
        } else if (strcmp(op, "ls") == 0 && i + 1 < argc) {
            ls(argv[++i]);
        } else if (strcmp(op, "write") == 0 && i + 2 < argc) {
            write_file(argv[i + 1], argv[i + 2]);
            i += 2;
        } else if (strcmp(op, "symlink") == 0 && i + 2 < argc) {
            make_symlink(argv[i + 1], argv[i + 2]);
            i += 2;
        } else {
            fprintf(stderr, "usage: fs.wasm (cat PATH | ls DIR | write PATH TEXT | symlink TARGET LINK)...\n");
            return 2;
        }
    }
    return 0;
}
