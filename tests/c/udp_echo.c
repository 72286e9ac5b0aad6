/* A UDP echo server: binds ADDR:PORT, prints "udp_echo: ready", sends each of COUNT datagrams
 * back to its sender, prints "udp_echo: done COUNT" and exits 0. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: udp_echo ADDR PORT COUNT\n"); return 2; }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])) };
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
    long count = atol(argv[3]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) { perror("udp_echo: socket"); return 1; }
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("udp_echo: bind"); return 1; }
    printf("udp_echo: ready\n");
    fflush(stdout);
    char buf[65536];
    for (long i = 0; i < count; i++) {
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n < 0) { fprintf(stderr, "udp_echo: recvfrom %ld: %s\n", i, strerror(errno)); return 1; }
        if (sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, len) != n) {
            fprintf(stderr, "udp_echo: sendto %ld: %s\n", i, strerror(errno));
            return 1;
        }
    }
    printf("udp_echo: done %ld\n", count);
    close(s);
    return 0;
}
