/*
 * walm-verify: proof that a live migration lost no memory.
 *
 * Allocates --mib M MiB (default 64) and keeps a generation number per 4 KiB
 * page. Every page holds a pattern that is a function of (page index,
 * generation): word j = mix(mix(page) + generation, j). One pass visits every
 * page in order: check all 512 words against the pattern of the page's current
 * generation, then bump the generation and rewrite the page.
 *
 * Why this catches a lost dirty page: the page was rewritten with generation
 * g+1 on the source after the migration had sent it; if the re-send is lost
 * the destination still holds generation g content, which differs in every
 * word from what the next check expects. A zeroed page, a page from another
 * index, or a single flipped bit differ too. The generation array itself lives
 * in guest memory: if its page were stale instead, the expected pattern would be
 * older than the content, which is a mismatch as well.
 *
 * Errors never stop the program: it reports them (at most 20 ERROR lines per
 * pass), counts them, rewrites the page with a fresh generation and goes on,
 * so one migration's damage is reported once and later migrations are still
 * checked.
 *
 * --selftest-corrupt-after N: a negative control. After N completed passes the
 * program damages three pages itself -- one reverted to its previous content
 * (a lost dirty page), one zeroed, one with a flipped bit -- and the next pass
 * must report exactly those three pages.
 */
#include "walm_common.h"

#include <sys/mman.h>

#define WORDS_PER_PAGE (WALM_PAGE_BYTES / sizeof(uint64_t))
#define MAX_ERROR_LINES_PER_PASS 20

static inline uint64_t page_base(uint64_t page, uint32_t gen)
{
    return walm_mix64(walm_mix64(page) + gen);
}

static inline uint64_t pattern_word(uint64_t base, unsigned word)
{
    return walm_mix64(base + word);
}

static void write_page(uint64_t *p, uint64_t page, uint32_t gen)
{
    uint64_t base = page_base(page, gen);
    for (unsigned j = 0; j < WORDS_PER_PAGE; j++)
        p[j] = pattern_word(base, j);
}

static void usage(void)
{
    fputs("usage: walm-verify [--mib M] [--rate-mib-s R] [--interval-ms N] [--slice-ms N]\n"
          "                   [--selftest-corrupt-after PASSES]\n", stderr);
}

int main(int argc, char **argv)
{
    const char *prog = "walm-verify";
    long mib = 64;
    double target_mib_s = 0;
    long interval_ms = 1000;
    long slice_ms = 10;
    long selftest_after_passes = -1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--mib")) { mib = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--rate-mib-s")) { target_mib_s = walm_arg_double(prog, a, v); i++; }
        else if (!strcmp(a, "--interval-ms")) { interval_ms = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--slice-ms")) { slice_ms = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--selftest-corrupt-after")) { selftest_after_passes = walm_arg_long(prog, a, v); i++; }
        else if (!strcmp(a, "--help")) { usage(); return 0; }
        else { usage(); walm_die(prog, "unknown_option", a); }
    }
    if (mib < 1) walm_die(prog, "mib_must_be_positive", NULL);
    if (interval_ms < 1) interval_ms = 1;
    if (slice_ms < 1) slice_ms = 1;

    const uint64_t npages = (uint64_t)mib * (1048576u / WALM_PAGE_BYTES);
    char *mem = mmap(NULL, (size_t)npages * WALM_PAGE_BYTES, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint32_t *gen = calloc(npages, sizeof(uint32_t));
    if (mem == MAP_FAILED || gen == NULL)
        walm_die(prog, "alloc_failed", strerror(errno));

    int64_t start_ns = walm_now_ns();
    for (uint64_t p = 0; p < npages; p++)
        write_page((uint64_t *)(mem + p * WALM_PAGE_BYTES), p, 0);
    int64_t now_ns = walm_now_ns();
    walm_line("WALM verify state=ready t_ms=%lld seq=0 mib=%ld fill_ms=%lld",
              (long long)(now_ns / 1000000), mib, (long long)((now_ns - start_ns) / 1000000));

    const int64_t interval_ns = interval_ms * 1000000LL;
    const int64_t slice_ns = slice_ms * 1000000LL;
    const double target_pages_s = target_mib_s * (1048576.0 / WALM_PAGE_BYTES);
    struct walm_pacer pacer;
    uint64_t seq = 0, passes = 0, pages_checked = 0, errors = 0;
    uint64_t checked_at_report = 0;
    unsigned error_lines_this_pass = 0;
    uint64_t cursor = 0; /* next page of the current pass */
    int64_t last_report_ns = now_ns;
    walm_pacer_init(&pacer, target_pages_s, now_ns);
    int64_t next_report_ns = now_ns + interval_ns, next_slice_ns = now_ns;

    for (;;) {
        uint64_t todo;
        now_ns = walm_now_ns();
        if (target_mib_s > 0) {
            todo = walm_pacer_take(&pacer, now_ns);
        } else {
            todo = 64; /* unpaced: look at the clock every 256 KiB checked */
        }

        for (uint64_t k = 0; k < todo; k++) {
            uint64_t *p = (uint64_t *)(mem + cursor * WALM_PAGE_BYTES);
            uint64_t base = page_base(cursor, gen[cursor]);
            unsigned bad_words = 0, first_bad = 0;
            for (unsigned j = 0; j < WORDS_PER_PAGE; j++) {
                if (p[j] != pattern_word(base, j)) {
                    if (bad_words == 0)
                        first_bad = j;
                    bad_words++;
                }
            }
            if (bad_words) {
                errors++;
                if (error_lines_this_pass < MAX_ERROR_LINES_PER_PASS) {
                    error_lines_this_pass++;
                    walm_line("WALM verify ERROR page=%llu word=%u expected=%016llx got=%016llx "
                              "bad_words=%u gen=%u pass=%llu t_ms=%lld",
                              (unsigned long long)cursor, first_bad,
                              (unsigned long long)pattern_word(base, first_bad),
                              (unsigned long long)p[first_bad], bad_words, gen[cursor],
                              (unsigned long long)passes + 1, (long long)walm_now_ms());
                }
            }
            gen[cursor]++;
            write_page(p, cursor, gen[cursor]);
            pages_checked++;
            if (++cursor == npages) {
                cursor = 0;
                passes++;
                error_lines_this_pass = 0;
                if (selftest_after_passes >= 0 && passes == (uint64_t)selftest_after_passes) {
                    /* Damage three pages the way a broken migration would. */
                    uint64_t stale = npages / 4, zeroed = npages / 2, flipped = (npages * 3) / 4;
                    write_page((uint64_t *)(mem + stale * WALM_PAGE_BYTES), stale, gen[stale] - 1);
                    memset(mem + zeroed * WALM_PAGE_BYTES, 0, WALM_PAGE_BYTES);
                    ((uint64_t *)(mem + flipped * WALM_PAGE_BYTES))[100] ^= 1ULL << 17;
                    walm_line("WALM verify selftest=corrupted t_ms=%lld pass=%llu stale_page=%llu "
                              "zeroed_page=%llu flipped_page=%llu",
                              (long long)walm_now_ms(), (unsigned long long)passes,
                              (unsigned long long)stale, (unsigned long long)zeroed,
                              (unsigned long long)flipped);
                }
            }
        }

        now_ns = walm_now_ns();
        if (now_ns >= next_report_ns) {
            double secs = (double)(now_ns - last_report_ns) / 1e9;
            seq++;
            walm_line("WALM verify t_ms=%lld seq=%llu pass=%llu pages_checked=%llu errors=%llu "
                      "mib=%ld rate_mib_s=%.2f",
                      (long long)(now_ns / 1000000), (unsigned long long)seq,
                      (unsigned long long)passes, (unsigned long long)pages_checked,
                      (unsigned long long)errors, mib,
                      (double)(pages_checked - checked_at_report) * WALM_PAGE_BYTES / WALM_MIB / secs);
            checked_at_report = pages_checked;
            last_report_ns = now_ns;
            walm_next_deadline(&next_report_ns, interval_ns, now_ns);
        }

        if (target_mib_s > 0) {
            next_slice_ns += slice_ns;
            if (next_slice_ns < now_ns)
                next_slice_ns = now_ns;
            walm_sleep_until_ns(next_slice_ns);
        }
    }
}
