/*
 * A native sidecar for the tests of Linux containers in a Wasm pod:
 *
 *   sidecar proxy LISTEN_PORT TARGET_PORT
 *       forwards every TCP connection on LISTEN_PORT (all addresses) to
 *       127.0.0.1:TARGET_PORT, a thread per direction, and logs one line per
 *       connection; SIGTERM ends it with status 0
 *   sidecar write PATH TEXT
 *       writes TEXT to PATH (an init container preparing a file), then exits
 *   sidecar uts
 *       prints the hostname, then sleeps until SIGTERM
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One forwarded connection; the second direction to end closes both. */
struct conn {
    int client, upstream;
    int open_directions;
};

struct direction {
    struct conn *conn;
    int from, to;
};

static void *copy(void *arg) {
    struct direction d = *(struct direction *)arg;
    free(arg);
    char buf[16384];
    ssize_t n;
    while ((n = read(d.from, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(d.to, buf + off, (size_t)(n - off));
            if (w <= 0) goto done;
            off += w;
        }
    }
done:
    shutdown(d.to, SHUT_WR);
    if (__atomic_sub_fetch(&d.conn->open_directions, 1, __ATOMIC_ACQ_REL) == 0) {
        close(d.conn->client);
        close(d.conn->upstream);
        free(d.conn);
    }
    return NULL;
}

static int forward(struct conn *conn, int from, int to) {
    struct direction *d = malloc(sizeof *d);
    if (!d) return -1;
    d->conn = conn;
    d->from = from;
    d->to = to;
    pthread_t t;
    if (pthread_create(&t, NULL, copy, d) != 0) {
        free(d);
        return -1;
    }
    pthread_detach(t);
    return 0;
}

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

static int proxy(int listen_port, int target_port) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(listen_port)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 64) != 0) {
        perror("sidecar: listen");
        return 1;
    }
    printf("proxying :%d to 127.0.0.1:%d\n", listen_port, target_port);
    fflush(stdout);
    struct sockaddr_in target = {.sin_family = AF_INET, .sin_port = htons(target_port)};
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (;;) {
        int client = accept(lfd, NULL, NULL);
        if (client < 0) continue;
        int upstream = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(upstream, (struct sockaddr *)&target, sizeof target) != 0) {
            perror("sidecar: connect to the app");
            close(upstream);
            close(client);
            continue;
        }
        printf("connection forwarded to 127.0.0.1:%d\n", target_port);
        fflush(stdout);
        struct conn *conn = malloc(sizeof *conn);
        if (!conn) return 1;
        conn->client = client;
        conn->upstream = upstream;
        conn->open_directions = 2;
        if (forward(conn, client, upstream) != 0 || forward(conn, upstream, client) != 0) {
            fprintf(stderr, "sidecar: no thread\n");
            return 1;
        }
    }
}

int main(int argc, char **argv) {
    signal(SIGTERM, stop);
    if (argc == 4 && strcmp(argv[1], "proxy") == 0) return proxy(atoi(argv[2]), atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "write") == 0) {
        FILE *f = fopen(argv[2], "w");
        if (!f || fputs(argv[3], f) < 0 || fclose(f) != 0) {
            perror(argv[2]);
            return 1;
        }
        printf("wrote %s\n", argv[2]);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "uts") == 0) {
        char name[256] = "";
        gethostname(name, sizeof name - 1);
        printf("hostname %s\n", name);
        fflush(stdout);
        for (;;) pause();
    }
    fprintf(stderr, "usage: sidecar proxy LISTEN TARGET | write PATH TEXT | uts\n");
    return 2;
}
