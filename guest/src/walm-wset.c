/*
 * walm-wset: working-set writer (workload "wset") and read-mostly scanner
 * (workload "rset", --read).
 *
 * wset: allocates --mib W MiB, touches every page, then writes random pages of
 * that set at --rate-mib-s R MiB/s (0 = as fast as the CPU allows). This is the
 * dirty-page load a live migration has to chase: every page written after
 * the migration copied it must be sent again.
 *
 * rset (--read): the same set, but each page operation reads the whole page and
 * only --write-pct P percent of the operations (default 1) also rewrite it, so
 * the set stays hot while the dirty rate stays small.
 *
 * Pacing: the rate is a token bucket refilled from CLOCK_MONOTONIC and spent
 * in slices of --slice-ms (default 10 ms) followed by a sleep, so the load is
 * smooth at the scale a migration's dirty-bitmap sync sees. Credit left over
 * after a stall (a paused VM, a busy host) is capped at 100 ms worth of pages:
 * after migration downtime the writer resumes its rate instead of bursting to
 * "catch up" and distorting the measurement.
 *
 * Adversarial variants of wset, for probes that a plain writer cannot fool:
 *   --same              each page write stores back the values the page holds:
 *                       the migration's dirty log sees every written page, a
 *                       probe that hashes page contents sees nothing change.
 *   --start-after-s N   idle for N s after the ready line, then write: quiet
 *                       while probed, a heavy writer during the migration.
 *   --burst-ms A --quiet-ms B
 *                       write for A ms, nothing for B ms, repeating from the
 *                       start of writing: a probe may land in a quiet moment.
 * Every writing phase starts with an empty bucket, so a pause is never made up
 * for with a burst.
 */
#include "walm_common.h"

#include <sys/mman.h>

#define WORDS_PER_PAGE (WALM_PAGE_BYTES / sizeof(uint64_t))
#define WORDS_PER_LINE 8u /* 64-byte cache line */

static volatile uint64_t sink; /* keeps the read sums observable */

/* A "page write" changes every 64-byte line of the page, so the whole 4 KiB
 * content differs from before (content-hashing dirty-rate probes see it too),
 * at an eighth of the stores of a full memset. */
static void write_page(uint64_t *page, uint64_t stamp)
{
    for (unsigned i = 0; i < WORDS_PER_PAGE; i += WORDS_PER_LINE)
        page[i] = stamp + i;
}

/* A page write that leaves the content as it was (--same). The stores still
 * dirty the page for the migration's dirty log; the volatile access keeps the
 * compiler from dropping a store of the value it has just loaded. */
static void rewrite_page_same(uint64_t *page)
{
    volatile uint64_t *word = page;
    for (unsigned i = 0; i < WORDS_PER_PAGE; i += WORDS_PER_LINE)
        word[i] = word[i];
}

static uint64_t read_page(const uint64_t *page)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < WORDS_PER_PAGE; i++)
        sum += page[i];
    return sum;
}

/* When wset writes: nothing before start_ns (--start-after-s); from then on
 * all the time, or burst_ns of writing and quiet_ns of nothing, repeating. */
enum phase { PHASE_WRITING, PHASE_IDLE, PHASE_QUIET };
static const char *const phase_names[] = { "writing", "idle", "quiet" };

struct write_schedule {
    int64_t start_ns;
    int64_t burst_ns; /* 0: no bursts */
    int64_t quiet_ns;
};

/* The phase at now_ns, and in *end_ns when it ends (INT64_MAX: never). */
static enum phase schedule_phase(const struct write_schedule *s, int64_t now_ns, int64_t *end_ns)
{
    if (now_ns < s->start_ns) {
        *end_ns = s->start_ns;
        return PHASE_IDLE;
    }
    if (s->burst_ns == 0) {
        *end_ns = INT64_MAX;
        return PHASE_WRITING;
    }
    const int64_t period_ns = s->burst_ns + s->quiet_ns;
    const int64_t cycle_start_ns = now_ns - (now_ns - s->start_ns) % period_ns;
    if (now_ns < cycle_start_ns + s->burst_ns) {
        *end_ns = cycle_start_ns + s->burst_ns;
        return PHASE_WRITING;
    }
    *end_ns = cycle_start_ns + period_ns;
    return PHASE_QUIET;
}

static void usage(void)
{
    fputs("usage: walm-wset [--mib W] [--rate-mib-s R] [--interval-ms N] [--slice-ms N] [--seed S]\n"
          "                 [--same] [--start-after-s N] [--burst-ms A --quiet-ms B]\n"
          "       walm-wset --read [--write-pct P] [--mib W] [--rate-mib-s R] [--interval-ms N]\n"
          "                 [--slice-ms N] [--seed S]\n", stderr);
}

int main(int argc, char **argv)
{
    const char *prog = "walm-wset";
    long mib = 256;
    double target_mib_s = 0;
    long interval_ms = 1000;
    long slice_ms = 10;
    int read_mode = 0;
    double write_pct = 1.0;
    int same_mode = 0;
    double start_after_s = 0;
    long burst_ms = 0, quiet_ms = 0;
    uint64_t rng = 0x5eed5eed12345678ULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--mib")) { mib = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--rate-mib-s")) { target_mib_s = walm_arg_double(prog, a, v); i++; }
        else if (!strcmp(a, "--interval-ms")) { interval_ms = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--slice-ms")) { slice_ms = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--write-pct")) { write_pct = walm_arg_double(prog, a, v); i++; }
        else if (!strcmp(a, "--seed")) { rng ^= (uint64_t)walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--start-after-s")) { start_after_s = walm_arg_double(prog, a, v); i++; }
        else if (!strcmp(a, "--burst-ms")) { burst_ms = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--quiet-ms")) { quiet_ms = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--same")) same_mode = 1;
        else if (!strcmp(a, "--read")) read_mode = 1;
        else if (!strcmp(a, "--help")) { usage(); return 0; }
        else { usage(); walm_die(prog, "unknown_option", a); }
    }
    if (mib < 1) walm_die(prog, "mib_must_be_positive", NULL);
    if (interval_ms < 1) interval_ms = 1;
    if (slice_ms < 1) slice_ms = 1;
    if (write_pct > 100) write_pct = 100;
    if (rng == 0) rng = 1; /* xorshift must not start at zero */
    if (read_mode && (same_mode || start_after_s > 0 || burst_ms > 0 || quiet_ms > 0))
        walm_die(prog, "same_start_after_burst_quiet_are_wset_only", NULL);
    if ((burst_ms > 0) != (quiet_ms > 0))
        walm_die(prog, "burst_ms_and_quiet_ms_go_together", NULL);
    /* The phase key only where phases exist: plain wset lines stay as they were. */
    const int show_phase = start_after_s > 0 || burst_ms > 0;

    const char *name = read_mode ? "rset" : "wset";
    const uint64_t npages = (uint64_t)mib * (1048576u / WALM_PAGE_BYTES);
    const size_t bytes = (size_t)npages * WALM_PAGE_BYTES;
    char *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        walm_die(prog, "mmap_failed", strerror(errno));

    /* Touch (write) every page first: the set is resident and non-zero before
     * the measured phase, so a migration cannot skip it as zero pages. */
    uint64_t stamp = 1;
    int64_t touch_start_ns = walm_now_ns();
    for (uint64_t p = 0; p < npages; p++)
        write_page((uint64_t *)(mem + p * WALM_PAGE_BYTES), stamp++);
    int64_t now_ns = walm_now_ns();
    walm_line("WALM %s state=ready t_ms=%lld seq=0 mib=%ld touch_ms=%lld", name,
              (long long)(now_ns / 1000000), mib, (long long)((now_ns - touch_start_ns) / 1000000));

    const int64_t interval_ns = interval_ms * 1000000LL;
    const int64_t slice_ns = slice_ms * 1000000LL;
    const double target_pages_s = target_mib_s * (1048576.0 / WALM_PAGE_BYTES);
    struct walm_pacer pacer;
    double write_credit_pct = 0;
    uint64_t seq = 0;
    uint64_t ops_total = 0, writes_total = 0;
    uint64_t ops_at_report = 0, writes_at_report = 0;
    int64_t last_report_ns = now_ns;
    walm_pacer_init(&pacer, target_pages_s, now_ns);
    int64_t next_report_ns = now_ns + interval_ns;
    int64_t next_slice_ns = now_ns;
    uint64_t sum = 0;
    const struct write_schedule schedule = {
        .start_ns = now_ns + (int64_t)(start_after_s * 1e9),
        .burst_ns = burst_ms * 1000000LL,
        .quiet_ns = quiet_ms * 1000000LL,
    };
    int64_t phase_end_ns = now_ns;
    enum phase last_phase = schedule_phase(&schedule, now_ns, &phase_end_ns);

    for (;;) {
        uint64_t todo;
        const int64_t last_phase_end_ns = phase_end_ns;
        now_ns = walm_now_ns();
        const enum phase phase = schedule_phase(&schedule, now_ns, &phase_end_ns);
        const int new_phase = phase != last_phase || phase_end_ns != last_phase_end_ns;
        if (phase == PHASE_WRITING && new_phase) {
            /* Start from an empty bucket: a pause earns no credit (even one
             * a stall has skipped over). */
            walm_pacer_init(&pacer, target_pages_s, now_ns);
            next_slice_ns = now_ns;
        }
        if (phase != PHASE_WRITING) {
            /* A writing phase that has just ended still owes its last slice,
             * earned up to its end and not beyond. */
            if (last_phase == PHASE_WRITING && target_mib_s > 0)
                todo = walm_pacer_take(&pacer, last_phase_end_ns);
            else
                todo = 0;
        } else if (target_mib_s > 0) {
            todo = walm_pacer_take(&pacer, now_ns);
        } else {
            todo = 256; /* unpaced: check the clock every 1 MiB of work */
        }

        for (uint64_t k = 0; k < todo; k++) {
            uint64_t *page = (uint64_t *)(mem + (walm_rand(&rng) % npages) * WALM_PAGE_BYTES);
            if (read_mode) {
                sum += read_page(page);
                write_credit_pct += write_pct;
                if (write_credit_pct >= 100.0) {
                    write_credit_pct -= 100.0;
                    write_page(page, stamp++);
                    writes_total++;
                }
            } else {
                if (same_mode)
                    rewrite_page_same(page);
                else
                    write_page(page, stamp++);
                writes_total++;
            }
        }
        ops_total += todo;
        last_phase = phase;

        now_ns = walm_now_ns();
        if (now_ns >= next_report_ns) {
            double secs = (double)(now_ns - last_report_ns) / 1e9;
            double ops_mib = (double)(ops_total - ops_at_report) * WALM_PAGE_BYTES / WALM_MIB;
            double wr_mib = (double)(writes_total - writes_at_report) * WALM_PAGE_BYTES / WALM_MIB;
            seq++;
            sink = sum;
            if (read_mode)
                walm_line("WALM rset t_ms=%lld seq=%llu mib=%ld target_mib_s=%.1f read_mib_s=%.2f "
                          "write_mib_s=%.3f read_mib=%.1f written_mib=%.1f write_pct=%.2f",
                          (long long)(now_ns / 1000000), (unsigned long long)seq, mib, target_mib_s,
                          ops_mib / secs, wr_mib / secs,
                          (double)ops_total * WALM_PAGE_BYTES / WALM_MIB,
                          (double)writes_total * WALM_PAGE_BYTES / WALM_MIB, write_pct);
            else
                walm_line("WALM wset t_ms=%lld seq=%llu mib=%ld target_mib_s=%.1f rate_mib_s=%.2f "
                          "written_mib=%.1f%s%s%s",
                          (long long)(now_ns / 1000000), (unsigned long long)seq, mib, target_mib_s,
                          wr_mib / secs, (double)writes_total * WALM_PAGE_BYTES / WALM_MIB,
                          same_mode ? " same=1" : "", show_phase ? " phase=" : "",
                          show_phase ? phase_names[phase] : "");
            ops_at_report = ops_total;
            writes_at_report = writes_total;
            last_report_ns = now_ns;
            walm_next_deadline(&next_report_ns, interval_ns, now_ns);
        }

        if (phase != PHASE_WRITING) {
            /* Nothing to write: sleep to the next line or the next phase. */
            walm_sleep_until_ns(phase_end_ns < next_report_ns ? phase_end_ns : next_report_ns);
        } else if (target_mib_s > 0) {
            next_slice_ns += slice_ns;
            if (next_slice_ns < now_ns)
                next_slice_ns = now_ns;
            walm_sleep_until_ns(next_slice_ns);
        }
    }
}
