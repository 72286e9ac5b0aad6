// A plain TCP echo server for the loss tests (tests/tests/loss.rs): the same program runs on
// the kernel and under accel-run, so the two are measured alike.
//
// Usage: echo_server ADDR PORT COUNT
// Listens on ADDR:PORT, prints "listening" once it does, then serves COUNT connections one
// after another: writes back everything it reads, and when the client has closed its side and
// every byte went back, closes. Exits 0 after the last one (so the preload prints its
// counters), 1 on any error, with a message naming the call that failed.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "echo_server: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static char buf[64 * 1024];
	struct sockaddr_in addr = { .sin_family = AF_INET };
	int one = 1;

	if (argc != 4) {
		fprintf(stderr, "usage: echo_server ADDR PORT COUNT\n");
		return 2;
	}
	if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
		fprintf(stderr, "echo_server: not an IPv4 address: %s\n", argv[1]);
		return 2;
	}
	addr.sin_port = htons((unsigned short)atoi(argv[2]));
	long count = atol(argv[3]);

	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0)
		die("socket");
	if (setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("setsockopt SO_REUSEADDR");
	if (bind(l, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("bind");
	if (listen(l, 128) < 0)
		die("listen");
	printf("listening\n");
	fflush(stdout);

	for (long i = 0; i < count; i++) {
		int c = accept(l, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR) {
				i--;
				continue;
			}
			die("accept");
		}
		if (setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
			die("setsockopt TCP_NODELAY");
		for (;;) {
			ssize_t n = read(c, buf, sizeof(buf));
			if (n < 0) {
				if (errno == EINTR)
					continue;
				die("read");
			}
			if (n == 0)
				break;
			if (write_all(c, buf, (size_t)n) < 0)
				die("write");
		}
		if (close(c) < 0)
			die("close");
	}
	close(l);
	return 0;
}
