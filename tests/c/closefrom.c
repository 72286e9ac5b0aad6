/* A program that closes every fd it did not open (as daemons and spawners do, with a close()
 * loop and with close_range) must keep working under accel: accel's own fds are not the
 * program's to close. Prints "closefrom: ok" and exits 0 on success. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: closefrom ADDR PORT\n"); return 2; }
    int s = socket(AF_INET, SOCK_STREAM, 0); /* accel starts here */
    if (s < 0) { perror("socket"); return 1; }
    /* Move our socket out of the way, then close everything else from 3 up. */
    int mine = fcntl(s, F_DUPFD_CLOEXEC, 900);
    if (mine < 0) { perror("dup"); return 1; }
    close(s);
    for (int fd = 3; fd < 256; fd++) close(fd);
    if (close_range(256, 899, 0) != 0) { perror("close_range"); return 1; }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])) };
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
    if (connect(mine, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); return 1; }
    char buf[8];
    if (send(mine, "closed!", 7, 0) != 7) { perror("send"); return 1; }
    size_t got = 0;
    while (got < 7) {
        ssize_t r = recv(mine, buf + got, 7 - got, 0);
        if (r <= 0) { perror("recv"); return 1; }
        got += (size_t)r;
    }
    if (memcmp(buf, "closed!", 7) != 0) { fprintf(stderr, "closefrom: echo differs\n"); return 1; }
    close(mine);
    printf("closefrom: ok\n");
    return 0;
}
