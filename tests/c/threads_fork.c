/* Threads and fork() on accelerated sockets (run under accel-run against a kernel echo
 * server): sockets made on one thread are used from others, two threads block on two
 * sockets at once, and a forked child that closes one inherited socket and writes to the
 * other does what it would with the kernel: its close leaves the parent's connection open, its
 * write reaches the peer. Prints "threads_fork: ok" and exits 0 on success. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sockaddr_in server;

static void die(const char *what) {
    fprintf(stderr, "threads_fork: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int connected(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) die("socket");
    if (connect(s, (struct sockaddr *)&server, sizeof server) != 0) die("connect");
    return s;
}

static void echo_once(int s, const char *msg) {
    size_t n = strlen(msg);
    char buf[256];
    if (send(s, msg, n, 0) != (ssize_t)n) die("send");
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(s, buf + got, sizeof buf - got, 0);
        if (r <= 0) die("recv");
        got += (size_t)r;
    }
    if (got != n || memcmp(buf, msg, n) != 0) {
        fprintf(stderr, "threads_fork: echo of %s differs\n", msg);
        exit(1);
    }
}

struct waiter { int s; char got[64]; ssize_t n; };

/* Blocks in recv until the main thread sends something through the echo server. */
static void *wait_echo(void *arg) {
    struct waiter *w = arg;
    w->n = recv(w->s, w->got, 10, MSG_WAITALL);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: threads_fork ADDR PORT\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    server.sin_family = AF_INET;
    server.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) die("address");

    int a = connected(), b = connected();
    echo_once(a, "hello a");
    echo_once(b, "hello b");

    /* Two threads block on two sockets at once; the main thread sends on both. */
    struct waiter wa = { .s = a }, wb = { .s = b };
    pthread_t ta, tb;
    if (pthread_create(&ta, NULL, wait_echo, &wa) || pthread_create(&tb, NULL, wait_echo, &wb)) die("pthread_create");
    if (send(b, "to-b-12345", 10, 0) != 10) die("send b");
    if (send(a, "to-a-67890", 10, 0) != 10) die("send a");
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    if (wa.n != 10 || memcmp(wa.got, "to-a-67890", 10) || wb.n != 10 || memcmp(wb.got, "to-b-12345", 10)) {
        fprintf(stderr, "threads_fork: threads got %zd/%zd bytes\n", wa.n, wb.n);
        return 1;
    }
    printf("threads: ok\n");

    /* A child closes one inherited socket and writes to the other, as with the kernel: its
     * close leaves the parent's connection open, its write reaches the peer (one connection,
     * shared), and the parent reads the echo of it. */
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        close(a);
        ssize_t r = send(b, "from-child", 10, MSG_NOSIGNAL);
        close(b);
        _exit(r == 10 ? 0 : 1);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) die("child");
    char echoed[10];
    size_t got = 0;
    while (got < sizeof echoed) {
        ssize_t r = recv(b, echoed + got, sizeof echoed - got, 0);
        if (r <= 0) die("recv of the child's echo");
        got += (size_t)r;
    }
    if (memcmp(echoed, "from-child", 10) != 0) {
        fprintf(stderr, "threads_fork: the child's write came back as %.10s\n", echoed);
        return 1;
    }
    echo_once(a, "after fork a");
    echo_once(b, "after fork b");
    /* Nothing more arrived. */
    char extra[16];
    ssize_t r = recv(b, extra, sizeof extra, MSG_DONTWAIT);
    if (r != -1 || errno != EAGAIN) {
        fprintf(stderr, "threads_fork: unexpected data after fork (%zd)\n", r);
        return 1;
    }
    printf("fork: ok\n");
    close(a);
    close(b);
    printf("threads_fork: ok\n");
    return 0;
}
