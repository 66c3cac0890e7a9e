/*
 * The native twin of test/wasm/python/handler.py for `make bench`: an
 * HTTP/1.1 server on $PORT (else 8080) that answers every GET with
 * "hello from native http PATH" and logs one line per request, a thread per
 * connection with keep-alive. Run by runc, it is the baseline a wasi:http
 * pod is measured against.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void *serve(void *arg) {
    int fd = (int)(long)arg;
    char buf[8192];
    size_t have = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
            if (have == sizeof buf) goto done;
            ssize_t n = read(fd, buf + have, sizeof buf - have);
            if (n <= 0) goto done;
            have += (size_t)n;
        }
        char method[16] = "", path[1024] = "";
        if (sscanf(buf, "%15s %1023s", method, path) != 2) goto done;
        int close_after = memmem(buf, (size_t)(end - buf), "Connection: close", 17) != NULL ||
                          memmem(buf, (size_t)(end - buf), "HTTP/1.0", 8) != NULL;
        pthread_mutex_lock(&log_lock);
        printf("handling %s %s\n", method, path);
        fflush(stdout);
        pthread_mutex_unlock(&log_lock);
        char body[1100], out[1400];
        int blen = snprintf(body, sizeof body, "hello from native http %s\n", path);
        int olen = snprintf(out, sizeof out,
                            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                            "content-length: %d\r\n\r\n%s",
                            blen, body);
        if (write(fd, out, (size_t)olen) != olen || close_after) goto done;
        size_t used = (size_t)(end + 4 - buf);
        memmove(buf, buf + used, have - used);
        have -= used;
    }
done:
    close(fd);
    return NULL;
}

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

int main(void) {
    signal(SIGTERM, stop);
    signal(SIGPIPE, SIG_IGN);
    const char *port = getenv("PORT");
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons(port ? (unsigned short)atoi(port) : 8080),
                               .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) || listen(s, 128)) {
        perror("listen");
        return 1;
    }
    for (;;) {
        int fd = accept(s, NULL, NULL);
        if (fd < 0) continue;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(long)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(t);
    }
}
