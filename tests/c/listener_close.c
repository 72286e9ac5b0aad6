/* An accepted connection outlives its listener: the server accepts, closes the listening
 * socket, and keeps echoing on the connection. Run under accel-run; a kernel client in B
 * connects to PORT and exchanges messages. Prints "listener_close: ok" on success. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: listener_close ADDR PORT\n"); return 2; }
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])) };
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4)) { perror("listen"); return 1; }
    printf("listening\n");
    fflush(stdout);
    int c = accept(l, NULL, NULL);
    if (c < 0) { perror("accept"); return 1; }
    close(l);
    char buf[256];
    int rounds = 0;
    for (;;) {
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n < 0) { perror("recv"); return 1; }
        if (n == 0) break;
        if (send(c, buf, (size_t)n, 0) != n) { perror("send"); return 1; }
        rounds++;
    }
    close(c);
    printf("listener_close: ok (%d rounds)\n", rounds);
    return 0;
}
