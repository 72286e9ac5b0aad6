/*
 * One epoll set mixing kernel fds (eventfd, pipe, Unix socketpair, timerfd) with a TCP socket
 * that accel-run accelerates (connected to a kernel echo server in namespace B): every event
 * must come out of epoll_wait, from each kind of fd, alone and all at once, also while
 * epoll_wait is blocked, and nothing may come out that did not happen.
 *
 * Usage: mixed_epoll SERVER_IP PORT
 * Prints what it saw, one line per step; exits 0 and prints "mixed_epoll: ok" when every
 * check passed, 1 with a "FAIL:" line otherwise. A 20 s alarm ends a hang.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { T_EVENTFD = 1, T_PIPE, T_UNIX, T_TIMER, T_SOCKET, T_COUNT };
static const char *names[] = {"?", "eventfd", "pipe", "unix", "timerfd", "socket"};

static int ep, efd, pfd[2], ufd[2], tfd, sock;

#define FAIL(...)                                                                                 \
    do {                                                                                          \
        printf("FAIL: " __VA_ARGS__);                                                             \
        printf(" (errno %d %s)\n", errno, strerror(errno));                                       \
        exit(1);                                                                                  \
    } while (0)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Consumes the readiness of `which` so the level-triggered set goes quiet again. */
static void drain(int which) {
    char buf[256];
    uint64_t v;
    switch (which) {
    case T_EVENTFD:
        if (read(efd, &v, 8) != 8) FAIL("read eventfd");
        break;
    case T_PIPE:
        if (read(pfd[0], buf, sizeof buf) <= 0) FAIL("read pipe");
        break;
    case T_UNIX:
        if (recv(ufd[0], buf, sizeof buf, 0) <= 0) FAIL("recv unix");
        break;
    case T_TIMER:
        if (read(tfd, &v, 8) != 8) FAIL("read timerfd");
        break;
    case T_SOCKET: {
        ssize_t n = recv(sock, buf, sizeof buf, 0);
        if (n <= 0) FAIL("recv socket returned %zd", n);
        break;
    }
    }
}

static void trigger(int which) {
    uint64_t one = 1;
    switch (which) {
    case T_EVENTFD:
        if (write(efd, &one, 8) != 8) FAIL("write eventfd");
        break;
    case T_PIPE:
        if (write(pfd[1], "p", 1) != 1) FAIL("write pipe");
        break;
    case T_UNIX:
        if (send(ufd[1], "u", 1, 0) != 1) FAIL("send unix");
        break;
    case T_TIMER: {
        struct itimerspec its = {.it_value = {.tv_nsec = 50 * 1000 * 1000}};
        if (timerfd_settime(tfd, 0, &its, NULL) != 0) FAIL("timerfd_settime");
        break;
    }
    case T_SOCKET:
        if (send(sock, "ping", 4, 0) != 4) FAIL("send socket");
        break;
    }
}

/* Waits until every fd in `want` (a bit mask of T_*) was reported, within 5 s; fails on an
 * event from an fd not in `want`. The echo of "ping" may come in pieces: the socket stays in
 * the set until 4 bytes came back. */
static void expect(const char *step, unsigned want) {
    unsigned seen = 0;
    double deadline = now_ms() + 5000;
    int sock_bytes = 0;
    while (seen != want) {
        int left = (int)(deadline - now_ms());
        if (left <= 0) FAIL("%s: timed out, saw mask %#x of %#x", step, seen, want);
        struct epoll_event evs[8];
        int n = epoll_wait(ep, evs, 8, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            FAIL("%s: epoll_wait", step);
        }
        for (int i = 0; i < n; i++) {
            int which = (int)evs[i].data.u32;
            if (!(want & (1u << which)))
                FAIL("%s: unexpected event %#x from %s", step, evs[i].events, names[which]);
            if (!(evs[i].events & EPOLLIN))
                FAIL("%s: %s reported %#x without EPOLLIN", step, names[which], evs[i].events);
            if (which == T_SOCKET) {
                char buf[16];
                ssize_t r = recv(sock, buf, sizeof buf, MSG_DONTWAIT);
                if (r <= 0) FAIL("%s: recv on socket returned %zd", step, r);
                if (memcmp(buf, "ping" + sock_bytes, (size_t)r) != 0) FAIL("%s: echo differs", step);
                sock_bytes += (int)r;
                if (sock_bytes < 4) continue;
            } else {
                drain(which);
            }
            if (!(seen & (1u << which))) printf("%s: saw %s\n", step, names[which]);
            seen |= 1u << which;
        }
    }
    /* Nothing left over: the set is quiet again. */
    struct epoll_event ev;
    int n = epoll_wait(ep, &ev, 1, 0);
    if (n != 0) FAIL("%s: %d spurious event(s) after the step, first from %s", step, n, names[ev.data.u32]);
}

static void *late_eventfd(void *arg) {
    (void)arg;
    /* Lets the main thread block in epoll_wait first; the test passes either way. */
    struct timespec d = {.tv_nsec = 100 * 1000 * 1000};
    nanosleep(&d, NULL);
    trigger(T_EVENTFD);
    return NULL;
}

static void add(int fd, int which) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)which};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) FAIL("epoll_ctl ADD %s", names[which]);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s SERVER_IP PORT\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(20);

    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sin.sin_addr) != 1) FAIL("bad address %s", argv[1]);
    sock = socket(AF_INET, SOCK_STREAM, 0);
    if (sock < 0) FAIL("socket");
    if (connect(sock, (struct sockaddr *)&sin, sizeof sin) != 0) FAIL("connect %s:%s", argv[1], argv[2]);
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    printf("connected to %s:%s\n", argv[1], argv[2]);

    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) FAIL("eventfd");
    if (pipe2(pfd, O_NONBLOCK | O_CLOEXEC) != 0) FAIL("pipe2");
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, ufd) != 0) FAIL("socketpair");
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) FAIL("timerfd_create");
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) FAIL("epoll_create1");
    add(efd, T_EVENTFD);
    add(pfd[0], T_PIPE);
    add(ufd[0], T_UNIX);
    add(tfd, T_TIMER);
    add(sock, T_SOCKET);

    /* Quiet set: a timeout returns 0 after (about) the timeout, not early, not never. */
    double t0 = now_ms();
    struct epoll_event ev;
    int n = epoll_wait(ep, &ev, 1, 200);
    double waited = now_ms() - t0;
    if (n != 0) FAIL("quiet set returned %d event(s), first from %s", n, names[ev.data.u32]);
    if (waited < 190 || waited > 2000) FAIL("epoll_wait(200 ms) took %.0f ms", waited);
    printf("quiet: timeout after %.0f ms\n", waited);

    /* Each kind alone. */
    for (int which = T_EVENTFD; which < T_COUNT; which++) {
        char step[32];
        snprintf(step, sizeof step, "alone-%s", names[which]);
        trigger(which);
        expect(step, 1u << which);
    }

    /* All at once. */
    unsigned all = 0;
    for (int which = T_EVENTFD; which < T_COUNT; which++) {
        trigger(which);
        all |= 1u << which;
    }
    expect("together", all);

    /* Events that arrive while epoll_wait is blocked: the echo, the timer (50 ms) and an
     * eventfd written by another thread (100 ms). */
    pthread_t th;
    trigger(T_SOCKET);
    trigger(T_TIMER);
    if (pthread_create(&th, NULL, late_eventfd, NULL) != 0) FAIL("pthread_create");
    expect("while-blocked", (1u << T_SOCKET) | (1u << T_TIMER) | (1u << T_EVENTFD));
    pthread_join(th, NULL);

    /* Ten round trips, each waited for through epoll. */
    for (int i = 0; i < 10; i++) {
        trigger(T_SOCKET);
        expect("round-trip", 1u << T_SOCKET);
    }

    close(sock);
    printf("mixed_epoll: ok\n");
    return 0;
}
