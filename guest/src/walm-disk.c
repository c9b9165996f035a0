/*
 * walm-disk: the disk check that runs beside any workload when the guest has
 * a disk (/dev/vda).
 *
 * Every interval it writes one 4 KiB record, sequence number seq = 1, 2, ...,
 * at block 1 + (seq - 1) % --max-blocks, with O_DIRECT|O_DSYNC so the write has
 * reached the host's storage before it counts. Then it reads back, with
 * O_DIRECT (the guest page cache must not answer for the disk), every block
 * written so far and compares it with the record it must hold. Block 0 is never
 * touched: it stays free for a partition table or a label.
 *
 * A record's content depends only on its seq (magic, seq, block, then a hash of
 * seq and word index), so a mismatch shows what the block holds instead: a
 * record with an older seq is a lost write, zeros are a lost allocation.
 *
 * Live migration: the process keeps running across the migration with its
 * in-memory table of which record each block must hold, so after switchover it
 * simply goes on writing and checking -- every block written on the source is
 * read back on the destination. A fresh boot starts over from seq 1 and simply
 * overwrites records of an earlier boot: the check is about one continuous run
 * of the guest, not about what a previous boot left behind.
 *
 * --max-blocks (default 1024 = 4 MiB) bounds the read-back to 4 MiB per
 * interval, a light load next to a workload, and wraps around after that many
 * intervals.
 */
#include "walm_common.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define BLOCK_BYTES 4096u
#define WORDS_PER_BLOCK (BLOCK_BYTES / sizeof(uint64_t))
#define READ_CHUNK_BLOCKS 256u /* 1 MiB per read: few syscalls, bounded buffer */
#define MAX_ERROR_LINES_PER_ROUND 20
#define RECORD_MAGIC 0x314B53444D4C4157ULL /* "WALMDSK1" little-endian */

static void fill_record(uint64_t *w, uint64_t seq, uint64_t block)
{
    w[0] = RECORD_MAGIC;
    w[1] = seq;
    w[2] = block;
    for (unsigned j = 3; j < WORDS_PER_BLOCK; j++)
        w[j] = walm_mix64(seq * 0x100000001B3ULL + j);
}

static void usage(void)
{
    fputs("usage: walm-disk [--dev /dev/vda] [--interval-ms N] [--max-blocks N]\n", stderr);
}

int main(int argc, char **argv)
{
    const char *prog = "walm-disk";
    const char *dev = "/dev/vda";
    long interval_ms = 1000;
    long max_blocks = 1024;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--dev")) { if (!v) walm_die(prog, "missing_value", a); dev = v; i++; }
        else if (!strcmp(a, "--interval-ms")) { interval_ms = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--max-blocks")) { max_blocks = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--help")) { usage(); return 0; }
        else { usage(); walm_die(prog, "unknown_option", a); }
    }
    if (interval_ms < 1) interval_ms = 1;

    int fd = open(dev, O_RDWR | O_DIRECT | O_DSYNC);
    if (fd < 0)
        walm_die(prog, "open_failed", dev);
    uint64_t dev_bytes = 0;
    if (ioctl(fd, BLKGETSIZE64, &dev_bytes) == 0) {
        long fit_blocks = (long)(dev_bytes / BLOCK_BYTES) - 1;
        if (fit_blocks < 1)
            walm_die(prog, "device_too_small", dev);
        if (max_blocks > fit_blocks)
            max_blocks = fit_blocks;
    }
    if (max_blocks < 1) walm_die(prog, "max_blocks_must_be_positive", NULL);

    uint64_t *record = NULL, *expect = NULL;
    unsigned char *chunk = NULL;
    /* O_DIRECT needs buffers aligned to the logical block size; 4 KiB covers all. */
    if (posix_memalign((void **)&record, BLOCK_BYTES, BLOCK_BYTES) ||
        posix_memalign((void **)&expect, BLOCK_BYTES, BLOCK_BYTES) ||
        posix_memalign((void **)&chunk, BLOCK_BYTES, (size_t)READ_CHUNK_BLOCKS * BLOCK_BYTES))
        walm_die(prog, "alloc_failed", NULL);
    /* Per block: seq of the record it must hold (0 = nothing known), and
     * whether its mismatch was already reported (each bad record counts once). */
    uint64_t *block_seq = calloc((size_t)max_blocks, sizeof(uint64_t));
    unsigned char *block_reported = calloc((size_t)max_blocks, 1);
    if (!block_seq || !block_reported)
        walm_die(prog, "alloc_failed", NULL);

    uint64_t seq = 0, written = 0, checked = 0, bad_blocks = 0, io_errors = 0;
    long used_blocks = 0; /* blocks 1..used_blocks hold records */
    const int64_t interval_ns = interval_ms * 1000000LL;
    int64_t start_ns = walm_now_ns();
    walm_line("WALM disk state=ready t_ms=%lld seq=0 dev=%s max_blocks=%ld dev_mib=%llu",
              (long long)(start_ns / 1000000), dev, max_blocks,
              (unsigned long long)(dev_bytes >> 20));

    for (;;) {
        seq++;
        long slot = (long)((seq - 1) % (uint64_t)max_blocks);
        uint64_t block = (uint64_t)slot + 1;
        fill_record(record, seq, block);
        ssize_t n = pwrite(fd, record, BLOCK_BYTES, (off_t)(block * BLOCK_BYTES));
        if (n == (ssize_t)BLOCK_BYTES) {
            block_seq[slot] = seq;
            written++;
        } else {
            /* Unknown whether any of it landed: stop checking this block until
             * a later write succeeds. */
            block_seq[slot] = 0;
            io_errors++;
            walm_line("WALM disk ERROR op=write block=%llu seq=%llu errno=%d t_ms=%lld",
                      (unsigned long long)block, (unsigned long long)seq, n < 0 ? errno : 0,
                      (long long)walm_now_ms());
        }
        block_reported[slot] = 0;
        if (slot + 1 > used_blocks)
            used_blocks = slot + 1;

        unsigned error_lines = 0;
        for (long first = 0; first < used_blocks; first += READ_CHUNK_BLOCKS) {
            long count = used_blocks - first;
            if (count > (long)READ_CHUNK_BLOCKS)
                count = READ_CHUNK_BLOCKS;
            size_t want = (size_t)count * BLOCK_BYTES;
            n = pread(fd, chunk, want, (off_t)((uint64_t)(first + 1) * BLOCK_BYTES));
            if (n != (ssize_t)want) {
                io_errors++;
                walm_line("WALM disk ERROR op=read block=%llu blocks=%ld errno=%d t_ms=%lld",
                          (unsigned long long)(first + 1), count, n < 0 ? errno : 0,
                          (long long)walm_now_ms());
                continue;
            }
            for (long k = 0; k < count; k++) {
                long s = first + k;
                if (block_seq[s] == 0)
                    continue;
                const uint64_t *got = (const uint64_t *)(chunk + (size_t)k * BLOCK_BYTES);
                fill_record(expect, block_seq[s], (uint64_t)s + 1);
                checked++;
                if (memcmp(got, expect, BLOCK_BYTES) == 0 || block_reported[s])
                    continue;
                unsigned j = 0;
                while (got[j] == expect[j])
                    j++;
                block_reported[s] = 1;
                bad_blocks++;
                if (error_lines++ < MAX_ERROR_LINES_PER_ROUND)
                    walm_line("WALM disk ERROR block=%ld expected_seq=%llu got_seq=%llu word=%u "
                              "expected=%016llx got=%016llx t_ms=%lld",
                              s + 1, (unsigned long long)block_seq[s],
                              (unsigned long long)(got[0] == RECORD_MAGIC ? got[1] : 0), j,
                              (unsigned long long)expect[j], (unsigned long long)got[j],
                              (long long)walm_now_ms());
            }
        }

        int64_t now_ns = walm_now_ns();
        walm_line("WALM disk t_ms=%lld seq=%llu written=%llu checked=%llu errors=%llu "
                  "bad_blocks=%llu io_errors=%llu blocks_in_use=%ld",
                  (long long)(now_ns / 1000000), (unsigned long long)seq,
                  (unsigned long long)written, (unsigned long long)checked,
                  (unsigned long long)(bad_blocks + io_errors), (unsigned long long)bad_blocks,
                  (unsigned long long)io_errors, used_blocks);

        /* Absolute schedule; after a long stall (a paused VM) skip missed ticks
         * rather than write a burst of records. */
        int64_t next_ns = start_ns + (int64_t)seq * interval_ns;
        if (next_ns < now_ns) {
            int64_t missed_ticks = (now_ns - next_ns) / interval_ns + 1;
            start_ns += missed_ticks * interval_ns;
            next_ns += missed_ticks * interval_ns;
        }
        walm_sleep_until_ns(next_ns);
    }
}
