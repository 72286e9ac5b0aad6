/*
 * An accelerated listener on the wildcard address in an epoll set is reached two ways: from
 * namespace B through accel, and through loopback on its kernel socket (which sits in the
 * kernel's epoll set too). Each way, epoll_wait reports the listener once per call (the kernel
 * never reports an fd twice in one result) and accept returns the connection.
 *
 * Usage: listener_epoll PORT
 * Prints "listening", then waits for one connection from outside; then connects to itself
 * through 127.0.0.1. Prints "listener_epoll: ok" on success, "FAIL: ..." and exits 1
 * otherwise. A 20 s alarm ends a hang.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define FAIL(...)                                                                                 \
    do {                                                                                          \
        printf("FAIL: " __VA_ARGS__);                                                             \
        printf(" (errno %d %s)\n", errno, strerror(errno));                                       \
        exit(1);                                                                                  \
    } while (0)

/* Waits (up to 5 s) until the listener is reported, checks it came once in that result, and
 * accepts one connection; returns the peer's address. */
static struct sockaddr_in accept_one(const char *step, int ep, int lst) {
    struct epoll_event evs[4];
    int n;
    do {
        n = epoll_wait(ep, evs, 4, 5000);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) FAIL("%s: epoll_wait returned %d", step, n);
    if (n != 1) FAIL("%s: %d events for one listener in one epoll_wait", step, n);
    if (!(evs[0].events & EPOLLIN)) FAIL("%s: event %#x without EPOLLIN", step, evs[0].events);
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    int c = accept4(lst, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK);
    if (c < 0) FAIL("%s: accept4", step);
    char ip[32];
    inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
    printf("%s: accepted %s\n", step, ip);
    close(c);
    /* Nothing left: the set is quiet again. */
    n = epoll_wait(ep, evs, 4, 0);
    if (n != 0) FAIL("%s: %d event(s) after the accept", step, n);
    return peer;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(20);
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    if (lst < 0) FAIL("socket");
    int one = 1;
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    if (bind(lst, (struct sockaddr *)&any, sizeof any) != 0 || listen(lst, 4) != 0) FAIL("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) FAIL("epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lst};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lst, &ev) != 0) FAIL("epoll_ctl");
    printf("listening\n");

    struct sockaddr_in outside = accept_one("from-outside", ep, lst);
    if (outside.sin_addr.s_addr == htonl(INADDR_LOOPBACK)) FAIL("the outside connection came from loopback");

    int cl = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in lo = any;
    lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (cl < 0 || connect(cl, (struct sockaddr *)&lo, sizeof lo) != 0) FAIL("connect through loopback");
    struct sockaddr_in self = accept_one("through-loopback", ep, lst);
    if (self.sin_addr.s_addr != htonl(INADDR_LOOPBACK)) FAIL("the loopback connection came from elsewhere");
    close(cl);
    close(lst);
    printf("listener_epoll: ok\n");
    return 0;
}
