/*
 * Shared helpers for the WALM guest workloads.
 *
 * Every program prints machine-readable progress lines on stdout:
 *     WALM <workload> t_ms=<CLOCK_MONOTONIC ms> seq=<n> key=value ...
 * One line per interval, flushed at once: stdout is the serial console and a
 * harness on the host parses it while the guest runs (and while it migrates).
 *
 * Header-only on purpose: each program is a single static binary built with one
 * gcc call, no libraries to link.
 */
#ifndef WALM_COMMON_H
#define WALM_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WALM_PAGE_BYTES 4096u
#define WALM_MIB 1048576.0

static inline int64_t walm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline int64_t walm_now_ms(void)
{
    return walm_now_ns() / 1000000LL;
}

/* Sleep until an absolute CLOCK_MONOTONIC time: pacing against absolute
 * deadlines keeps the long-run rate exact even when single sleeps overshoot. */
static inline void walm_sleep_until_ns(int64_t deadline_ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(deadline_ns / 1000000000LL);
    ts.tv_nsec = (long)(deadline_ns % 1000000000LL);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Token bucket that paces work to a rate (pages/s, packets/s). Credit is capped
 * at a tenth of a second's worth plus one unit: no burst after a stall. */
struct walm_pacer {
    double per_s;
    double max_credit;
    double credit;
    int64_t last_refill_ns;
};

static inline void walm_pacer_init(struct walm_pacer *p, double per_s, int64_t now_ns)
{
    p->per_s = per_s;
    p->max_credit = per_s * 0.1 + 1.0;
    p->credit = 0;
    p->last_refill_ns = now_ns;
}

/* Units of work allowed now. */
static inline uint64_t walm_pacer_take(struct walm_pacer *p, int64_t now_ns)
{
    p->credit += (double)(now_ns - p->last_refill_ns) * p->per_s / 1e9;
    p->last_refill_ns = now_ns;
    if (p->credit > p->max_credit)
        p->credit = p->max_credit;
    uint64_t todo = (uint64_t)p->credit;
    p->credit -= (double)todo;
    return todo;
}

/* Advance a periodic deadline; after a long stall (e.g. a migration's downtime)
 * restart from now instead of catching up with a burst of lines. */
static inline void walm_next_deadline(int64_t *next_ns, int64_t interval_ns, int64_t now_ns)
{
    *next_ns += interval_ns;
    if (*next_ns <= now_ns)
        *next_ns = now_ns + interval_ns;
}

/* Print one progress line and flush it: a line must reach the console while the
 * program runs, not when a stdio buffer happens to fill. */
static inline void walm_line(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

/* splitmix64 finaliser: a cheap, well-mixing 64-bit hash used for test
 * patterns (so any stale, zeroed or misplaced data shows as a mismatch). */
static inline uint64_t walm_mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* xorshift64*: fast PRNG for choosing random pages; quality is irrelevant
 * beyond spreading writes over the whole set. */
static inline uint64_t walm_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Option parsing: every option is "--name value" (or a bare "--flag").
 * Unknown options are fatal at start, before any work: a typo on the kernel
 * command line must show up as an error line, not as a silently different run. */
static inline void walm_die(const char *prog, const char *msg, const char *arg)
{
    /* No spaces in values: the error line stays parseable as key=value. */
    printf("WALM error prog=%s msg=%s%s%s\n", prog, msg, arg ? ":" : "", arg ? arg : "");
    fflush(stdout);
    exit(2);
}

static inline double walm_arg_double(const char *prog, const char *name, const char *value)
{
    char *end = NULL;
    double v;
    if (value == NULL)
        walm_die(prog, "missing_value", name);
    errno = 0;
    v = strtod(value, &end);
    if (errno != 0 || end == value || *end != '\0' || v < 0)
        walm_die(prog, "bad_number", value);
    return v;
}

static inline long walm_arg_long(const char *prog, const char *name, const char *value)
{
    char *end = NULL;
    long v;
    if (value == NULL)
        walm_die(prog, "missing_value", name);
    errno = 0;
    v = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || v < 0)
        walm_die(prog, "bad_integer", value);
    return v;
}

#endif
