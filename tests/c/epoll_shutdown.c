/*
 * A readiness change that sends nothing, made by another thread while epoll_wait spins, is
 * still reported: shutdown(SHUT_RD) makes a connection readable (EOF) without a packet, so
 * accel's interfaces show no progress; a spinning epoll_wait that only looked again when
 * they did would sleep through it (until its timeout).
 *
 * Usage: epoll_shutdown ADDR PORT
 * Prints "listening", accepts one connection (which the peer keeps open, sending nothing),
 * then waits in epoll_wait for input on it while a second thread, 100 ms later, shuts down
 * its read side. The order does not matter for the result (either way epoll_wait must report
 * EPOLLIN at once); the delay only makes it likely that the shutdown lands during the wait.
 * Prints "epoll_shutdown: ok" on success, "FAIL: ..." and exits 1 otherwise. A 20 s alarm
 * ends a hang.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...)                                                                                 \
    do {                                                                                          \
        printf("FAIL: " __VA_ARGS__);                                                             \
        printf(" (errno %d %s)\n", errno, strerror(errno));                                       \
        exit(1);                                                                                  \
    } while (0)

static int conn;

static void *shut_later(void *arg) {
    (void)arg;
    struct timespec d = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
    nanosleep(&d, NULL);
    if (shutdown(conn, SHUT_RD) != 0) FAIL("shutdown(SHUT_RD)");
    return NULL;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ADDR PORT\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(20);
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    if (lst < 0) FAIL("socket");
    int one = 1;
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) FAIL("bad address %s", argv[1]);
    if (bind(lst, (struct sockaddr *)&a, sizeof a) != 0 || listen(lst, 4) != 0) FAIL("listen");
    printf("listening\n");
    conn = accept(lst, NULL, NULL);
    if (conn < 0) FAIL("accept");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) FAIL("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = conn};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, conn, &ev) != 0) FAIL("epoll_ctl");
    struct epoll_event evs[4];
    if (epoll_wait(ep, evs, 4, 0) != 0) FAIL("input reported before the shutdown");
    pthread_t th;
    if (pthread_create(&th, NULL, shut_later, NULL) != 0) FAIL("pthread_create");
    double t0 = now_s();
    int n;
    do {
        n = epoll_wait(ep, evs, 4, 5000);
    } while (n < 0 && errno == EINTR);
    double waited = now_s() - t0;
    pthread_join(th, NULL);
    if (n != 1) FAIL("epoll_wait returned %d after %.3f s (the shutdown was not seen)", n, waited);
    if (!(evs[0].events & EPOLLIN)) FAIL("event %#x without EPOLLIN", evs[0].events);
    if (waited > 2.0) FAIL("the shutdown was seen only after %.3f s", waited);
    char b[8];
    ssize_t r = recv(conn, b, sizeof b, MSG_DONTWAIT);
    if (r != 0) FAIL("recv after SHUT_RD returned %zd, not EOF", r);
    printf("seen after %.3f s\n", waited);
    printf("epoll_shutdown: ok\n");
    return 0;
}
