/*
 * Socket misuse, case by case: what each call returns and which errno it sets. The test runs
 * this once on the kernel and once under accel-run and wants the same output, line for line:
 * an accelerated socket must fail exactly as a kernel socket does.
 *
 * Usage: misuse SERVER_IP ECHO_PORT RESET_PORT CLOSED_PORT LOCAL_IP LOCAL_PORT
 *   SERVER_IP:ECHO_PORT   a kernel TCP echo server (namespace B)
 *   SERVER_IP:RESET_PORT  a kernel TCP server that resets every connection it accepts
 *   SERVER_IP:CLOSED_PORT nothing listens there
 *   LOCAL_IP:LOCAL_PORT   an address of this namespace, port free (for bind cases)
 *
 * Output: one line per case, `case=<name> ret=<r> errno=<NAME> sigpipes=<n>` (errno is 0 when
 * the call succeeded; sigpipes counts the SIGPIPE signals received so far), then `done`.
 * Exit 0 when every case ran (whatever the results: the test compares them). A 20 s alarm ends
 * a hang with SIGALRM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig) {
    (void)sig;
    sigpipes++;
}

static const char *errname(int e) {
    static char buf[32];
    if (e == 0) return "0";
    const char *n = strerrorname_np(e);
    if (n) return n;
    snprintf(buf, sizeof buf, "E%d", e);
    return buf;
}

static void report(const char *name, long ret, int err) {
    printf("case=%s ret=%ld errno=%s sigpipes=%d\n", name, ret, errname(err), (int)sigpipes);
}

/* Runs `expr` with errno cleared and reports its result (errno only when it failed). */
#define CASE(name, expr)                                                                          \
    do {                                                                                          \
        errno = 0;                                                                                \
        long r_ = (long)(expr);                                                                   \
        int e_ = errno;                                                                           \
        report(name, r_, r_ < 0 ? e_ : 0);                                                        \
    } while (0)

static struct sockaddr_in addr(const char *ip, const char *port) {
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port))};
    if (inet_pton(AF_INET, ip, &sin.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", ip);
        exit(2);
    }
    return sin;
}

#define SA(p) ((struct sockaddr *)(p))

/* A set-up step that must work for the cases after it to mean anything. */
static void must(int ok, const char *what) {
    if (!ok) {
        printf("setup-failed: %s: %s\n", what, strerror(errno));
        exit(1);
    }
}

static int tcp(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    must(s >= 0, "socket");
    return s;
}

static int connected(struct sockaddr_in *to) {
    int s = tcp();
    must(connect(s, SA(to), sizeof *to) == 0, "connect to a kernel server in B");
    return s;
}

/* Waits up to 5 s for `events` (or an error/hang-up) on `fd`; returns whether it came. */
static int wait_for(int fd, short events) {
    struct pollfd p = {.fd = fd, .events = events};
    return poll(&p, 1, 5000) == 1;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s SERVER_IP ECHO_PORT RESET_PORT CLOSED_PORT LOCAL_IP LOCAL_PORT\n",
                argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(20);
    struct sigaction sa = {.sa_handler = on_sigpipe};
    sigaction(SIGPIPE, &sa, NULL);

    struct sockaddr_in echo = addr(argv[1], argv[2]);
    struct sockaddr_in reset = addr(argv[1], argv[3]);
    struct sockaddr_in closed = addr(argv[1], argv[4]);
    struct sockaddr_in local = addr(argv[5], argv[6]);
    char buf[64] = {0};
    int s, s2;

    /* Bad fd: -1, then a socket that was connected and is closed now. */
    CASE("send_fd_minus_1", send(-1, buf, 1, 0));
    CASE("recv_fd_minus_1", recv(-1, buf, 1, 0));
    CASE("close_fd_minus_1", close(-1));
    s = connected(&echo);
    CASE("close_connected", close(s));
    CASE("send_closed_fd", send(s, buf, 1, MSG_NOSIGNAL));
    CASE("recv_closed_fd", recv(s, buf, 1, 0));
    CASE("connect_closed_fd", connect(s, SA(&echo), sizeof echo));
    CASE("close_closed_fd", close(s));

    /* Not a socket. */
    int pfd[2];
    must(pipe(pfd) == 0, "pipe");
    CASE("send_on_pipe", send(pfd[1], buf, 1, 0));
    CASE("recv_on_pipe", recv(pfd[0], buf, 1, MSG_DONTWAIT));
    CASE("connect_on_pipe", connect(pfd[0], SA(&echo), sizeof echo));
    close(pfd[0]);
    close(pfd[1]);

    /* Bad address length, bad family. */
    s = tcp();
    CASE("bind_short_addrlen", bind(s, SA(&local), sizeof local - 1));
    CASE("bind_huge_addrlen", bind(s, SA(&local), 4096));
    CASE("connect_short_addrlen", connect(s, SA(&echo), sizeof echo - 1));
    CASE("connect_zero_addrlen", connect(s, SA(&echo), 0));
    struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "x"};
    CASE("bind_wrong_family", bind(s, SA(&un), sizeof un));
    CASE("connect_null_addr", connect(s, NULL, sizeof echo));
    close(s);
    s = socket(AF_INET, SOCK_DGRAM, 0);
    must(s >= 0, "udp socket");
    CASE("udp_bind_short_addrlen", bind(s, SA(&local), sizeof local - 1));
    CASE("udp_connect_short_addrlen", connect(s, SA(&echo), sizeof echo - 1));
    CASE("udp_send_unconnected", send(s, buf, 1, 0));
    CASE("udp_sendto_null_buffer", sendto(s, NULL, 16, 0, SA(&closed), sizeof closed));
    CASE("udp_recv_nonblocking_empty", recv(s, buf, sizeof buf, MSG_DONTWAIT));
    close(s);

    /* Address in use. */
    s = tcp();
    s2 = tcp();
    CASE("bind_local", bind(s, SA(&local), sizeof local));
    CASE("listen_local", listen(s, 8));
    CASE("bind_in_use", bind(s2, SA(&local), sizeof local));
    CASE("accept_on_unlistening", accept4(s2, NULL, NULL, SOCK_NONBLOCK));
    close(s2);
    must(fcntl(s, F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
    CASE("accept_nonblocking_empty", accept(s, NULL, NULL));
    close(s);

    /* Before connect. */
    s = tcp();
    CASE("send_before_connect_nosignal", send(s, buf, 1, MSG_NOSIGNAL));
    CASE("write_before_connect", write(s, buf, 1));
    CASE("recv_before_connect", recv(s, buf, 1, MSG_DONTWAIT));
    CASE("getpeername_before_connect",
         getpeername(s, SA(&(struct sockaddr_in){0}), &(socklen_t){sizeof(struct sockaddr_in)}));
    CASE("shutdown_before_connect", shutdown(s, SHUT_RDWR));
    close(s);

    /* Connected: NULL buffers, bad options, second connect, non-blocking reads. */
    s = connected(&echo);
    CASE("send_null_buffer", send(s, NULL, 16, 0));
    CASE("send_ping", send(s, "ping", 4, 0));
    must(wait_for(s, POLLIN), "the echo of ping");
    CASE("recv_null_buffer", recv(s, NULL, 4, 0));
    CASE("recv_after_efault", recv(s, buf, 4, 0));
    CASE("recv_nonblocking_empty", recv(s, buf, sizeof buf, MSG_DONTWAIT));
    CASE("second_connect", connect(s, SA(&echo), sizeof echo));
    CASE("connect_other_addr", connect(s, SA(&closed), sizeof closed));
    int v = 65536;
    CASE("setsockopt_short_optlen", setsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, 2));
    CASE("getsockopt_unknown", getsockopt(s, SOL_SOCKET, 9999, &v, &(socklen_t){sizeof v}));
    CASE("getsockopt_null_optlen", getsockopt(s, SOL_SOCKET, SO_ERROR, &v, NULL));
    CASE("shutdown_bad_how", shutdown(s, 7));
    CASE("shutdown_wr", shutdown(s, SHUT_WR));
    CASE("send_after_shutdown_wr_nosignal", send(s, "x", 1, MSG_NOSIGNAL));
    CASE("write_after_shutdown_wr", write(s, "x", 1));
    must(wait_for(s, POLLIN), "the echo server's FIN");
    CASE("recv_eof", recv(s, buf, sizeof buf, 0));
    close(s);

    /* Non-blocking connect: EINPROGRESS, then EALREADY/EISCONN, SO_ERROR. */
    s = tcp();
    must(fcntl(s, F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
    CASE("nonblocking_connect", connect(s, SA(&echo), sizeof echo));
    must(wait_for(s, POLLOUT), "connection established");
    v = -1;
    CASE("nonblocking_connect_so_error", getsockopt(s, SOL_SOCKET, SO_ERROR, &v, &(socklen_t){sizeof v}));
    report("nonblocking_connect_so_error_value", v, v);
    /* Linux: the first connect() after the handshake completed reports success (0), the next
     * one EISCONN. */
    CASE("nonblocking_connect_again", connect(s, SA(&echo), sizeof echo));
    CASE("nonblocking_connect_third", connect(s, SA(&echo), sizeof echo));
    close(s);

    /* Connection refused, blocking and non-blocking. */
    s = tcp();
    CASE("connect_refused", connect(s, SA(&closed), sizeof closed));
    CASE("send_after_refused_nosignal", send(s, buf, 1, MSG_NOSIGNAL));
    close(s);
    s = tcp();
    must(fcntl(s, F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
    CASE("nonblocking_connect_refused", connect(s, SA(&closed), sizeof closed));
    must(wait_for(s, POLLOUT), "the refusal");
    v = -1;
    CASE("refused_so_error", getsockopt(s, SOL_SOCKET, SO_ERROR, &v, &(socklen_t){sizeof v}));
    report("refused_so_error_value", v, v);
    close(s);

    /* The peer resets: read first (ECONNRESET), then write (EPIPE, SIGPIPE unless
     * MSG_NOSIGNAL). */
    s = connected(&reset);
    must(wait_for(s, POLLIN), "the peer's reset");
    CASE("reset_recv", recv(s, buf, sizeof buf, 0));
    CASE("reset_send_nosignal", send(s, buf, 1, MSG_NOSIGNAL));
    CASE("reset_write_sigpipe", write(s, buf, 1));
    CASE("reset_recv_again", recv(s, buf, sizeof buf, 0));
    close(s);
    /* The peer resets: write first (ECONNRESET, then EPIPE). */
    s = connected(&reset);
    must(wait_for(s, POLLIN), "the peer's reset");
    CASE("reset_first_send_nosignal", send(s, buf, 1, MSG_NOSIGNAL));
    CASE("reset_second_send_nosignal", send(s, buf, 1, MSG_NOSIGNAL));
    CASE("reset_sendto_sigpipe", sendto(s, buf, 1, 0, NULL, 0));
    close(s);

    printf("done\n");
    return 0;
}
