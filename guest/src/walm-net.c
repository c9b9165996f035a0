/*
 * walm-net: paced UDP stream (workload "net"), and its receiver (--listen).
 *
 * Sender: sends --size byte datagrams (default 1400) to --dst IP --port P
 * (default 5001) at --rate-mbit R megabit/s of UDP payload. Each datagram
 * carries a magic, a sequence number and the send time, so a receiver on the
 * other side of a migration can count lost and reordered packets. Send errors
 * (ECONNREFUSED from an ICMP port-unreachable, ENOBUFS, ENETUNREACH while the
 * link is down) are counted and the stream goes on: a migration briefly
 * interrupts the path and the measurement must survive that.
 *
 * Receiver (--listen): binds --port and prints received packets, payload rate,
 * lost packets (gaps in the sequence numbers) and the largest gap, per interval.
 * It is a static binary and also runs on the host side of the lab.
 */
#include "walm_common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAGIC "WALMNET1"
#define HEADER_BYTES 24u /* magic(8) + seq(8) + send t_ms(8) */
#define MAX_PAYLOAD 65000u

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (unsigned char)v; v >>= 8; }
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static void usage(void)
{
    fputs("usage: walm-net --dst IP [--port P] [--rate-mbit R] [--size BYTES] [--interval-ms N]\n"
          "       walm-net --listen [--port P] [--interval-ms N]\n", stderr);
}

static void run_receiver(const char *prog, long port, int64_t interval_ns)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr;
    int rcvbuf_bytes = 4 << 20;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        walm_die(prog, "bind_failed", strerror(errno));
    /* A migration's switchover delivers a burst; a small buffer would turn it into fake loss. */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf_bytes, sizeof rcvbuf_bytes);

    static unsigned char buf[MAX_PAYLOAD];
    uint64_t seq = 0, rx_pkts = 0, rx_bytes = 0, bytes_at_report = 0;
    uint64_t next_expected = 0, lost_pkts = 0, reordered_pkts = 0, max_gap = 0, bad_pkts = 0;
    int have_first = 0;
    int64_t last_report_ns = walm_now_ns(), next_report_ns = last_report_ns + interval_ns;
    walm_line("WALM netrx state=ready t_ms=%lld seq=0 port=%ld", (long long)(last_report_ns / 1000000), port);

    for (;;) {
        int64_t now_ns = walm_now_ns();
        int wait_ms = (int)((next_report_ns - now_ns) / 1000000);
        struct pollfd pfd = { fd, POLLIN, 0 };
        if (wait_ms < 0) wait_ms = 0;
        if (poll(&pfd, 1, wait_ms) > 0) {
            /* Drain everything queued before looking at the clock again. */
            for (;;) {
                ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
                if (n < 0) break;
                if ((size_t)n < HEADER_BYTES || memcmp(buf, MAGIC, 8) != 0) { bad_pkts++; continue; }
                uint64_t pkt_seq = get_be64(buf + 8);
                rx_pkts++;
                rx_bytes += (uint64_t)n;
                if (!have_first) { have_first = 1; next_expected = pkt_seq + 1; continue; }
                if (pkt_seq >= next_expected) {
                    uint64_t gap = pkt_seq - next_expected;
                    lost_pkts += gap;
                    if (gap > max_gap) max_gap = gap;
                    next_expected = pkt_seq + 1;
                } else {
                    /* Arrived late: it was counted lost when the gap opened. */
                    reordered_pkts++;
                    if (lost_pkts) lost_pkts--;
                }
            }
        }
        now_ns = walm_now_ns();
        if (now_ns >= next_report_ns) {
            double secs = (double)(now_ns - last_report_ns) / 1e9;
            seq++;
            walm_line("WALM netrx t_ms=%lld seq=%llu rx_pkts=%llu rate_mbit=%.2f lost_pkts=%llu "
                      "reordered_pkts=%llu max_gap=%llu last_seq=%llu bad_pkts=%llu",
                      (long long)(now_ns / 1000000), (unsigned long long)seq,
                      (unsigned long long)rx_pkts, (double)(rx_bytes - bytes_at_report) * 8 / 1e6 / secs,
                      (unsigned long long)lost_pkts, (unsigned long long)reordered_pkts,
                      (unsigned long long)max_gap,
                      (unsigned long long)(have_first ? next_expected - 1 : 0),
                      (unsigned long long)bad_pkts);
            bytes_at_report = rx_bytes;
            last_report_ns = now_ns;
            walm_next_deadline(&next_report_ns, interval_ns, now_ns);
        }
    }
}

int main(int argc, char **argv)
{
    const char *prog = "walm-net";
    const char *dst = NULL;
    long port = 5001;
    double rate_mbit = 10;
    long size_bytes = 1400;
    long interval_ms = 1000;
    long slice_ms = 10;
    int listen_mode = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--dst")) { if (!v) walm_die(prog, "missing_value", a); dst = v; i++; }
        else if (!strcmp(a, "--port")) { port = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--rate-mbit")) { rate_mbit = walm_arg_double(prog, a, v); i++; }
        else if (!strcmp(a, "--size")) { size_bytes = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--interval-ms")) { interval_ms = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--slice-ms")) { slice_ms = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--listen")) listen_mode = 1;
        else if (!strcmp(a, "--help")) { usage(); return 0; }
        else { usage(); walm_die(prog, "unknown_option", a); }
    }
    if (port < 1 || port > 65535) walm_die(prog, "bad_port", NULL);
    if (interval_ms < 1) interval_ms = 1;
    if (slice_ms < 1) slice_ms = 1;
    if (listen_mode) {
        run_receiver(prog, port, interval_ms * 1000000LL);
        return 0;
    }

    if (dst == NULL) { usage(); walm_die(prog, "missing_dst", NULL); }
    if (size_bytes < (long)HEADER_BYTES || size_bytes > (long)MAX_PAYLOAD) walm_die(prog, "bad_size", NULL);
    if (rate_mbit <= 0) walm_die(prog, "rate_must_be_positive", NULL);

    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, dst, &to.sin_addr) != 1)
        walm_die(prog, "bad_dst", dst);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        walm_die(prog, "socket_failed", strerror(errno));

    static unsigned char buf[MAX_PAYLOAD];
    memcpy(buf, MAGIC, 8);
    for (long i = HEADER_BYTES; i < size_bytes; i++)
        buf[i] = (unsigned char)(i * 7); /* non-zero filler: nothing along the path compresses it away */

    const double target_pkts_s = rate_mbit * 1e6 / 8.0 / (double)size_bytes;
    const int64_t interval_ns = interval_ms * 1000000LL, slice_ns = slice_ms * 1000000LL;
    struct walm_pacer pacer;
    uint64_t pkt_seq = 0, sent_pkts = 0, sent_at_report = 0, errors = 0;
    int last_errno = 0;
    uint64_t seq = 0;
    int64_t now_ns = walm_now_ns();
    int64_t last_report_ns = now_ns;
    int64_t next_report_ns = now_ns + interval_ns, next_slice_ns = now_ns;
    walm_pacer_init(&pacer, target_pkts_s, now_ns);
    walm_line("WALM net state=ready t_ms=%lld seq=0 dst=%s port=%ld size=%ld target_mbit=%.1f",
              (long long)(now_ns / 1000000), dst, port, size_bytes, rate_mbit);

    for (;;) {
        now_ns = walm_now_ns();
        uint64_t todo = walm_pacer_take(&pacer, now_ns);

        for (uint64_t k = 0; k < todo; k++) {
            put_be64(buf + 8, pkt_seq);
            put_be64(buf + 16, (uint64_t)(now_ns / 1000000));
            /* The sequence number advances even when a send fails: the receiver
             * then sees the failure as loss, which is what it was. */
            pkt_seq++;
            if (sendto(fd, buf, (size_t)size_bytes, 0, (struct sockaddr *)&to, sizeof to) < 0) {
                errors++;
                last_errno = errno;
            } else {
                sent_pkts++;
            }
        }

        now_ns = walm_now_ns();
        if (now_ns >= next_report_ns) {
            double secs = (double)(now_ns - last_report_ns) / 1e9;
            seq++;
            walm_line("WALM net t_ms=%lld seq=%llu sent_pkts=%llu rate_mbit=%.2f errors=%llu "
                      "last_errno=%d target_mbit=%.1f",
                      (long long)(now_ns / 1000000), (unsigned long long)seq,
                      (unsigned long long)sent_pkts,
                      (double)(sent_pkts - sent_at_report) * (double)size_bytes * 8 / 1e6 / secs,
                      (unsigned long long)errors, last_errno, rate_mbit);
            sent_at_report = sent_pkts;
            last_report_ns = now_ns;
            walm_next_deadline(&next_report_ns, interval_ns, now_ns);
        }

        next_slice_ns += slice_ns;
        if (next_slice_ns < now_ns)
            next_slice_ns = now_ns;
        walm_sleep_until_ns(next_slice_ns);
    }
}
