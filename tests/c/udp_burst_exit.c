/* Sends a burst of UDP datagrams and ends with _exit(2), which runs no atexit handlers.
 * Binds LOCAL:PORT, sends COUNT datagrams of 64 bytes to PEER:PORT back to back (each holds
 * its sequence number), prints "burst: sent" and calls _exit(0). */
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
    if (argc != 5) { fprintf(stderr, "usage: udp_burst_exit LOCAL PEER PORT COUNT\n"); return 2; }
    struct sockaddr_in local, peer;
    if (addr(argv[1], argv[3], &local) || addr(argv[2], argv[3], &peer)) return 2;
    long count = atol(argv[4]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) { perror("burst: socket"); return 1; }
    if (bind(s, (struct sockaddr *)&local, sizeof local) != 0) { perror("burst: bind"); return 1; }
    for (long i = 0; i < count; i++) {
        char msg[64];
        memset(msg, 0, sizeof msg);
        snprintf(msg, sizeof msg, "%ld", i);
        if (sendto(s, msg, sizeof msg, 0, (struct sockaddr *)&peer, sizeof peer) != (ssize_t)sizeof msg) {
            fprintf(stderr, "burst: sendto %ld: %s\n", i, strerror(errno));
            return 1;
        }
    }
    printf("burst: sent\n");
    fflush(stdout);
    _exit(0);
}
