/* An accelerated client that connects, exchanges a byte and closes, many times in a row to one
 * server: every connect must succeed (the ports of closed connections still in TIME-WAIT must
 * not be handed out again). Prints "conn_loop: ok N" on success. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: conn_loop ADDR PORT COUNT\n"); return 2; }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])) };
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
    int count = atoi(argv[3]);
    for (int i = 0; i < count; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) { perror("socket"); return 1; }
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
            fprintf(stderr, "conn_loop: connect %d of %d: %s\n", i, count, strerror(errno));
            return 1;
        }
        char c = 'x';
        if (send(s, &c, 1, 0) != 1 || recv(s, &c, 1, 0) != 1) {
            fprintf(stderr, "conn_loop: exchange %d: %s\n", i, strerror(errno));
            return 1;
        }
        close(s);
    }
    printf("conn_loop: ok %d\n", count);
    return 0;
}
