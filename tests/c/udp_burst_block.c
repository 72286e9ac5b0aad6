/* Sends bursts of UDP datagrams, then blocks where accel does not see it: a read on a pipe.
 * Binds LOCAL:PORT, prints "burst: ready"; then for each line read from stdin ("go"), sends
 * COUNT datagrams of 64 bytes to PEER:PORT, back to back (each holds "ROUND SEQ"), prints
 * "burst: sent ROUND" and blocks reading stdin again. Exits 0 at "exit" or end of input. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int addr(const char *ip, const char *port, struct sockaddr_in *a) {
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((unsigned short)atoi(port));
    return inet_pton(AF_INET, ip, &a->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: udp_burst_block LOCAL PEER PORT COUNT\n"); return 2; }
    struct sockaddr_in local, peer;
    if (addr(argv[1], argv[3], &local) || addr(argv[2], argv[3], &peer)) return 2;
    long count = atol(argv[4]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) { perror("burst: socket"); return 1; }
    if (bind(s, (struct sockaddr *)&local, sizeof local) != 0) { perror("burst: bind"); return 1; }
    printf("burst: ready\n");
    fflush(stdout);
    char line[64];
    for (long round = 0;; round++) {
        /* Blocks in read(2) on a pipe: not a socket call, accel does not see it. */
        ssize_t n = read(0, line, sizeof line - 1);
        if (n < 0) { perror("burst: read"); return 1; }
        if (n == 0 || strncmp(line, "exit", 4) == 0) break;
        for (long i = 0; i < count; i++) {
            char msg[64];
            memset(msg, 0, sizeof msg);
            snprintf(msg, sizeof msg, "%ld %ld", round, i);
            if (sendto(s, msg, sizeof msg, 0, (struct sockaddr *)&peer, sizeof peer) != (ssize_t)sizeof msg) {
                fprintf(stderr, "burst: sendto %ld: %s\n", i, strerror(errno));
                return 1;
            }
        }
        printf("burst: sent %ld\n", round);
        fflush(stdout);
    }
    close(s);
    return 0;
}
