/* hep_blast: paced sender for the collector benchmark (UDP datagrams or a TCP stream).
 *
 * Usage: hep_blast udp|tcp HOST PORT RATE COUNT FILE
 * FILE holds packets as <u16 big-endian length><bytes>...; they are sent round-robin,
 * COUNT packets at RATE packets/s (sendmmsg batches for UDP, one stream for TCP).
 * Prints "sent N in S seconds". Written for this project's benchmark only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s udp|tcp HOST PORT RATE COUNT FILE\n", argv[0]);
        return 2;
    }
    int tcp = strcmp(argv[1], "tcp") == 0;
    double rate = atof(argv[4]);
    long count = atol(argv[5]);
    FILE *f = fopen(argv[6], "rb");
    if (!f) { perror("open"); return 1; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(size);
    if (fread(buf, 1, size, f) != (size_t)size) { perror("read"); return 1; }
    fclose(f);
    int n = 0;
    for (long off = 0; off + 2 <= size; n++) off += 2 + ((buf[off] << 8) | buf[off + 1]);
    struct iovec *iov = calloc(n, sizeof *iov);
    long off = 0;
    for (int i = 0; i < n; i++) {
        int len = (buf[off] << 8) | buf[off + 1];
        iov[i].iov_base = buf + off + 2;
        iov[i].iov_len = len;
        off += 2 + len;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    inet_pton(AF_INET, argv[2], &addr.sin_addr);
    int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); return 1; }
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct mmsghdr msgs[BATCH];
    memset(msgs, 0, sizeof msgs);
    double start = now();
    long sent = 0;
    int next = 0;
    while (sent < count) {
        double due = start + sent / rate;
        if (now() < due) {
            /* Sleep rather than spin: on the bench machine the sender shares two cores with
             * the collector and the broker, and a spinning sender takes one of them. */
            struct timespec ts = {.tv_sec = (time_t)due, .tv_nsec = (long)((due - (time_t)due) * 1e9)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            continue;
        }
        int batch = BATCH;
        if (count - sent < batch) batch = (int)(count - sent);
        if (tcp) {
            for (int i = 0; i < batch; i++) {
                struct iovec *v = &iov[(next + i) % n];
                size_t done = 0;
                while (done < v->iov_len) {
                    ssize_t w = write(fd, (char *)v->iov_base + done, v->iov_len - done);
                    if (w < 0) { perror("write"); return 1; }
                    done += w;
                }
            }
        } else {
            for (int i = 0; i < batch; i++) {
                msgs[i].msg_hdr.msg_iov = &iov[(next + i) % n];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int done = 0;
            while (done < batch) {
                int r = sendmmsg(fd, msgs + done, batch - done, 0);
                if (r < 0) { perror("sendmmsg"); return 1; }
                done += r;
            }
        }
        next = (next + batch) % n;
        sent += batch;
    }
    if (tcp) shutdown(fd, SHUT_WR);
    printf("sent %ld in %.3f seconds\n", sent, now() - start);
    close(fd);
    return 0;
}
