/*
 * A TCP server driven line by line on stdin, for the exhaustion tests (tests/tests/limits.rs):
 * the same program runs on the kernel and under accel-run, and every answer is a line the test
 * compares.
 *
 * Usage: limits_server ADDR PORT BACKLOG
 * Prints "listening" once it listens on ADDR:PORT with BACKLOG. Then, per command:
 *   accept N        blocking accept of N connections       -> "accepted N"
 *   accept_once     one blocking accept                    -> "accept ret=R errno=E"
 *   accept_nb       one non-blocking accept (accept4)      -> "accept ret=R errno=E"
 *   socket_once     one socket(AF_INET, SOCK_STREAM), closed again -> "socket ret=R errno=E"
 *   limit N         lowers RLIMIT_NOFILE's soft limit to N -> "limit N"
 *   fill            opens /dev/null until it fails         -> "filled K errno=E"
 *   release N       closes N of those                      -> "released N"
 *   echo            on every connection: reads one message (blocking) and writes it back
 *                                                          -> "echoed N"
 *   recv_thread     a new thread does a blocking recv on the first connection
 *                                                          -> "recv_waiting", then "recv ret=R"
 *   connect A P     connects to A:P, sends "out", reads 3 bytes back, closes
 *                                                          -> "connect ok" / "connect errno=E"
 *   udp A P         a UDP socket sends "udp" to A:P and waits for the echo
 *                                                          -> "udp ok" / "udp errno=E"
 *   fill_send       on every connection, non-blocking sends of the connection's pattern (a
 *                   byte stream seeded by the peer's port, see `pattern`)
 *                   until EAGAIN                            -> "fill_send conns=N eagain=K"
 *   timed_send      blocking sends on the first connection with SO_SNDTIMEO 300 ms, until
 *                   one returns no bytes               -> "timed ret=R errno=E"
 *   send_total N    blocking sends until each connection carried N bytes of its pattern
 *                                                          -> "sent_total N"
 *   eof             on every connection: a blocking read must find the peer's EOF
 *                                                          -> "eof N"
 *   close N         closes the first N connections         -> "closed N"
 *   quit            exits 0
 * Unexpected failures print "FAIL: ..." and exit 1. A 120 s alarm ends a hang.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define FAIL(...)                                                                                 \
    do {                                                                                          \
        printf("FAIL: " __VA_ARGS__);                                                             \
        printf(" (errno %d %s)\n", errno, strerror(errno));                                       \
        exit(1);                                                                                  \
    } while (0)

#define MAX_CONNS 65536
static int conns[MAX_CONNS];
static int nconns;
static long sent[MAX_CONNS];
static int ports[MAX_CONNS]; /* each connection's peer port: its pattern's seed */
static int fillers[65536];
static int nfillers;

static const char *ename(int e) {
    switch (e) {
    case 0: return "0";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case EAGAIN: return "EAGAIN";
    case ENOBUFS: return "ENOBUFS";
    case ENOMEM: return "ENOMEM";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EINVAL: return "EINVAL";
    default: return "other";
    }
}

static struct sockaddr_in addr_of(const char *ip, const char *port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) FAIL("bad address %s", ip);
    return a;
}

static void keep(int c) {
    if (nconns == MAX_CONNS) FAIL("too many connections");
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    if (getpeername(c, (struct sockaddr *)&peer, &len) != 0) FAIL("getpeername");
    sent[nconns] = 0;
    ports[nconns] = ntohs(peer.sin_port);
    conns[nconns++] = c;
}

/* Byte `i` of the stream to the peer on port `port` (tests/tests/limits.rs computes the same). */
static unsigned char pattern(int port, long i) {
    return (unsigned char)(i * 7 + port * 13 + (i >> 10));
}

/* Sends connection `c`'s pattern from sent[c], at most `max` bytes; returns send's result. */
static ssize_t send_pattern(int c, long max) {
    unsigned char buf[16384];
    long n = max < (long)sizeof buf ? max : (long)sizeof buf;
    for (long i = 0; i < n; i++) buf[i] = pattern(ports[c], sent[c] + i);
    ssize_t r = send(conns[c], buf, (size_t)n, MSG_NOSIGNAL);
    if (r > 0) sent[c] += r;
    return r;
}

static void *recv_thread(void *arg) {
    (void)arg;
    char buf[64];
    ssize_t n = recv(conns[0], buf, sizeof buf, 0);
    int e = n < 0 ? errno : 0;
    printf("recv ret=%zd errno=%s\n", n, ename(e));
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s ADDR PORT BACKLOG\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(120);
    int lst = socket(AF_INET, SOCK_STREAM, 0);
    if (lst < 0) FAIL("socket");
    int one = 1;
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in at = addr_of(argv[1], argv[2]);
    if (bind(lst, (struct sockaddr *)&at, sizeof at) != 0) FAIL("bind");
    if (listen(lst, atoi(argv[3])) != 0) FAIL("listen");
    printf("listening\n");

    char line[256];
    pthread_t thread;
    int have_thread = 0;
    while (fgets(line, sizeof line, stdin)) {
        char cmd[32] = "", a1[64] = "", a2[64] = "";
        sscanf(line, "%31s %63s %63s", cmd, a1, a2);
        if (!strcmp(cmd, "accept")) {
            int n = atoi(a1);
            for (int i = 0; i < n; i++) {
                int c = accept(lst, NULL, NULL);
                if (c < 0) FAIL("accept %d of %d", i, n);
                keep(c);
            }
            printf("accepted %d\n", n);
        } else if (!strcmp(cmd, "accept_once") || !strcmp(cmd, "accept_nb")) {
            int c = !strcmp(cmd, "accept_nb") ? accept4(lst, NULL, NULL, SOCK_NONBLOCK)
                                               : accept(lst, NULL, NULL);
            int e = c < 0 ? errno : 0;
            if (c >= 0) {
                /* Blocking, like a connection from accept(). */
                int fl = fcntl(c, F_GETFL);
                fcntl(c, F_SETFL, fl & ~O_NONBLOCK);
                keep(c);
            }
            printf("accept ret=%s errno=%s\n", c >= 0 ? "fd" : "-1", ename(e));
        } else if (!strcmp(cmd, "socket_once")) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            int e = s < 0 ? errno : 0;
            if (s >= 0) close(s);
            printf("socket ret=%s errno=%s\n", s >= 0 ? "fd" : "-1", ename(e));
        } else if (!strcmp(cmd, "limit")) {
            struct rlimit rl;
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = (rlim_t)atol(a1);
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0) FAIL("setrlimit");
            printf("limit %s\n", a1);
        } else if (!strcmp(cmd, "fill")) {
            int e = 0;
            for (;;) {
                int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                    e = errno;
                    break;
                }
                if (nfillers == (int)(sizeof fillers / sizeof fillers[0])) FAIL("fill: no end");
                fillers[nfillers++] = fd;
            }
            printf("filled errno=%s\n", ename(e));
        } else if (!strcmp(cmd, "release")) {
            int n = atoi(a1);
            for (int i = 0; i < n && nfillers > 0; i++) close(fillers[--nfillers]);
            printf("released %d\n", n);
        } else if (!strcmp(cmd, "echo")) {
            for (int i = 0; i < nconns; i++) {
                char buf[256];
                ssize_t n = recv(conns[i], buf, sizeof buf, 0);
                if (n <= 0) FAIL("echo: recv on connection %d returned %zd", i, n);
                if (send(conns[i], buf, (size_t)n, MSG_NOSIGNAL) != n) FAIL("echo: send %d", i);
            }
            printf("echoed %d\n", nconns);
        } else if (!strcmp(cmd, "recv_thread")) {
            if (nconns == 0) FAIL("recv_thread: no connection");
            printf("recv_waiting\n");
            if (pthread_create(&thread, NULL, recv_thread, NULL) != 0) FAIL("pthread_create");
            have_thread = 1;
        } else if (!strcmp(cmd, "join")) {
            if (have_thread) pthread_join(thread, NULL);
            have_thread = 0;
            printf("joined\n");
        } else if (!strcmp(cmd, "connect")) {
            struct sockaddr_in to = addr_of(a1, a2);
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (s < 0) FAIL("connect: socket");
            struct timeval tv = {.tv_sec = 10};
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            char buf[8];
            if (connect(s, (struct sockaddr *)&to, sizeof to) != 0 || send(s, "out", 3, 0) != 3 ||
                recv(s, buf, 3, MSG_WAITALL) != 3 || memcmp(buf, "out", 3) != 0)
                printf("connect errno=%s\n", ename(errno));
            else
                printf("connect ok\n");
            close(s);
        } else if (!strcmp(cmd, "udp")) {
            struct sockaddr_in to = addr_of(a1, a2);
            int s = socket(AF_INET, SOCK_DGRAM, 0);
            if (s < 0) FAIL("udp: socket");
            struct timeval tv = {.tv_sec = 10};
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            struct sockaddr_in me = {.sin_family = AF_INET, .sin_addr = at.sin_addr};
            char buf[8];
            if (bind(s, (struct sockaddr *)&me, sizeof me) != 0 ||
                sendto(s, "udp", 3, 0, (struct sockaddr *)&to, sizeof to) != 3 ||
                recv(s, buf, sizeof buf, 0) != 3 || memcmp(buf, "udp", 3) != 0)
                printf("udp errno=%s\n", ename(errno));
            else
                printf("udp ok\n");
            close(s);
        } else if (!strcmp(cmd, "fill_send")) {
            int full = 0;
            for (int c = 0; c < nconns; c++) {
                int fl = fcntl(conns[c], F_GETFL);
                fcntl(conns[c], F_SETFL, fl | O_NONBLOCK);
                ssize_t r;
                while ((r = send_pattern(c, 1L << 30)) > 0) {
                }
                if (r < 0 && errno == EAGAIN) full++;
                else FAIL("fill_send: connection %d: send returned %zd", c, r);
                fcntl(conns[c], F_SETFL, fl);
            }
            printf("fill_send conns=%d eagain=%d\n", nconns, full);
        } else if (!strcmp(cmd, "timed_send")) {
            /* Until a send finds no room for a whole timeout (acknowledgements of what was in
             * flight may still make some). */
            struct timeval tv = {.tv_usec = 300000};
            setsockopt(conns[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            ssize_t r;
            while ((r = send_pattern(0, 16384)) > 0) {
            }
            int e = r < 0 ? errno : 0;
            struct timeval none = {0};
            setsockopt(conns[0], SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
            printf("timed ret=%zd errno=%s\n", r, ename(e));
        } else if (!strcmp(cmd, "send_total")) {
            long total = atol(a1);
            for (int c = 0; c < nconns; c++)
                while (sent[c] < total)
                    if (send_pattern(c, total - sent[c]) <= 0) FAIL("send_total: connection %d", c);
            printf("sent_total %ld\n", total);
        } else if (!strcmp(cmd, "eof")) {
            for (int i = 0; i < nconns; i++) {
                char b;
                ssize_t n = recv(conns[i], &b, 1, 0);
                if (n != 0) FAIL("eof: connection %d read %zd", i, n);
            }
            printf("eof %d\n", nconns);
        } else if (!strcmp(cmd, "close")) {
            int n = atoi(a1);
            if (n > nconns) n = nconns;
            for (int i = 0; i < n; i++) close(conns[i]);
            memmove(conns, conns + n, (size_t)(nconns - n) * sizeof conns[0]);
            memmove(sent, sent + n, (size_t)(nconns - n) * sizeof sent[0]);
            memmove(ports, ports + n, (size_t)(nconns - n) * sizeof ports[0]);
            nconns -= n;
            printf("closed %d\n", n);
        } else if (!strcmp(cmd, "quit")) {
            return 0;
        } else if (cmd[0]) {
            FAIL("unknown command %s", cmd);
        }
    }
    return 0;
}
