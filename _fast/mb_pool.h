/* mb_pool.h — minibit's thread pool (included only by _fast/_rt.pyx; others use mb_rt.h).
 *
 * Persistent workers, created on first use and kept: after a job a worker spins for
 * MB_SPIN_NS (the decode loop calls again within microseconds), then sleeps on a condition
 * variable until the next job; a worker a job did not ask for (after a call with more
 * threads) sleeps at once.  The caller is thread 0 of every job.
 *
 * A job is a range of items [0, n) cut into C chunks (about 8 per thread).  Thread t owns the
 * chunks [t C / nth, (t+1) C / nth), a contiguous run of rows, and takes them front to back;
 * a thread that runs out takes the next untaken chunk of the others.  So every thread streams
 * its own rows when all run, and a thread the OS has not scheduled yet holds nothing back:
 * the caller never waits for a thread that has not started, only for chunks in flight.
 *
 * No lock or barrier on the way.  Each thread's cursor is one 64-bit word: the job's
 * generation (32 bits), the next chunk (16) and the end of the share (16).  A chunk is taken
 * by compare-and-swap of that word, so a worker that wakes late, holding an old generation,
 * can never take a chunk of a newer job; the job's fields are read only after a successful
 * take, when the job cannot end (its chunk is not done) and so cannot be replaced.  The
 * caller waits for the count of finished chunks to reach C.
 *
 * Fork: pthread_atfork.  Before fork the submitting lock is taken (no job is half posted);
 * in the child, which has no workers, the pool is emptied and its locks made anew, so the
 * first parallel call there starts fresh workers.  Two threads submitting at once: the
 * second runs its job alone, inline (try-lock), never waits.
 */
#ifndef MB_POOL_H
#define MB_POOL_H

#include "mb_rt.h"

#include <stdlib.h>
#include <string.h>

#if defined(_WIN32) || !(defined(__GNUC__) || defined(__clang__))
#  define MB_POOL_THREADS 0            /* no pthreads: every job runs inline */
#else
#  define MB_POOL_THREADS 1
#endif

#if MB_POOL_THREADS
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#ifndef MB_SPIN_NS
#  define MB_SPIN_NS 2000000          /* a worker spins 2 ms after a job before it sleeps */
#endif
#define MB_POOL_MAX 64                /* threads per job, the caller included */
#define MB_CHUNKS_PER_THREAD 8

#if defined(__x86_64__) || defined(__i386__)
#  define MB_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#  define MB_PAUSE() __asm__ __volatile__("yield")
#else
#  define MB_PAUSE() do { } while (0)
#endif

typedef struct {
    _Alignas(64) _Atomic uint64_t word;          /* generation << 32 | next << 16 | end */
} mb_cursor;

static struct {
    mb_cursor cur[MB_POOL_MAX];
    _Alignas(64) _Atomic uint32_t gen;           /* the current job's generation */
    _Atomic int sleepers;
    _Atomic int nth;                             /* threads of the current job */
    _Alignas(64) _Atomic int64_t done;           /* chunks finished in the current job */
    mb_task_fn fn;                               /* the current job: written before its */
    void *ctx;                                   /* generation is published */
    int64_t n, chunks;
    int workers;                                 /* started and alive (this process) */
    pthread_mutex_t submit, mu;
    pthread_cond_t cv;
} mb_pool;

static int mb_pool_atfork_set = 0;

static inline uint64_t mb_pack(uint32_t g, uint32_t next, uint32_t end) {
    return ((uint64_t)g << 32) | ((uint64_t)next << 16) | (uint64_t)end;
}

static int64_t mb_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* take and run chunks of job g: thread id's own share first, then the others' */
static void mb_pool_work(int id, uint32_t g, int nth) {
    mb_task_fn fn = 0;
    void *ctx = 0;
    int64_t n = 0, C = 1;
    for (int k = 0; k < nth; k++) {
        mb_cursor *c = &mb_pool.cur[(id + k) % nth];
        uint64_t v = atomic_load_explicit(&c->word, memory_order_acquire);
        for (;;) {
            const uint32_t next = (uint32_t)(v >> 16) & 0xFFFFu, end = (uint32_t)v & 0xFFFFu;
            if ((uint32_t)(v >> 32) != g || next >= end) break;
            if (!atomic_compare_exchange_weak_explicit(&c->word, &v, v + (1u << 16),
                                                       memory_order_acq_rel, memory_order_acquire))
                continue;                          /* v reloaded: try again */
            if (!fn) { fn = mb_pool.fn; ctx = mb_pool.ctx; n = mb_pool.n; C = mb_pool.chunks; }
            fn(ctx, (int64_t)next * n / C, ((int64_t)next + 1) * n / C);
            atomic_fetch_add_explicit(&mb_pool.done, 1, memory_order_release);
            v = atomic_load_explicit(&c->word, memory_order_acquire);
        }
    }
}

static void *mb_pool_worker(void *arg) {
    const int id = (int)(intptr_t)arg & 0xFFFF;
    uint32_t seen = (uint32_t)((uintptr_t)arg >> 16);      /* the generation at creation */
    int spin = 1;               /* spin only after a job this worker took part in */
    for (;;) {
        uint32_t g = atomic_load_explicit(&mb_pool.gen, memory_order_acquire);
        if (g == seen) {                                  /* spin, then sleep */
            const int64_t until = spin ? mb_now_ns() + MB_SPIN_NS : 0;
            for (unsigned i = 1;; i++) {
                MB_PAUSE();
                g = atomic_load_explicit(&mb_pool.gen, memory_order_acquire);
                if (g != seen) break;
                if (!spin || ((i & 1023) == 0 && mb_now_ns() > until)) {
                    pthread_mutex_lock(&mb_pool.mu);
                    atomic_fetch_add(&mb_pool.sleepers, 1);
                    while ((g = atomic_load(&mb_pool.gen)) == seen)
                        pthread_cond_wait(&mb_pool.cv, &mb_pool.mu);
                    atomic_fetch_sub(&mb_pool.sleepers, 1);
                    pthread_mutex_unlock(&mb_pool.mu);
                    break;
                }
            }
        }
        seen = g;
        const int nth = atomic_load_explicit(&mb_pool.nth, memory_order_relaxed);
        spin = id < nth;        /* a worker beyond this job's threads goes back to sleep */
        if (spin) mb_pool_work(id, g, nth);
    }
    return 0;
}

static void mb_pool_prepare(void) { pthread_mutex_lock(&mb_pool.submit); }
static void mb_pool_parent(void) { pthread_mutex_unlock(&mb_pool.submit); }
static void mb_pool_child(void) {
    /* only the forking thread exists here: forget the workers, make the locks anew */
    mb_pool.workers = 0;
    atomic_store(&mb_pool.sleepers, 0);
    pthread_mutex_init(&mb_pool.submit, 0);
    pthread_mutex_init(&mb_pool.mu, 0);
    pthread_cond_init(&mb_pool.cv, 0);
}

static void mb_pool_init(void) {
    pthread_mutex_init(&mb_pool.submit, 0);
    pthread_mutex_init(&mb_pool.mu, 0);
    pthread_cond_init(&mb_pool.cv, 0);
    if (!mb_pool_atfork_set && pthread_atfork(mb_pool_prepare, mb_pool_parent, mb_pool_child) == 0)
        mb_pool_atfork_set = 1;
}

/* start workers 1 .. want - 1 (under the submit lock); returns the threads a job may use */
static int mb_pool_grow(int want) {
    const uint32_t g = atomic_load(&mb_pool.gen);
    while (mb_pool.workers + 1 < want) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        const uintptr_t arg = ((uintptr_t)g << 16) | (uintptr_t)(mb_pool.workers + 1);
        const int rc = pthread_create(&t, &at, mb_pool_worker, (void *)arg);
        pthread_attr_destroy(&at);
        if (rc != 0) break;
        mb_pool.workers++;
    }
    return mb_pool.workers + 1 < want ? mb_pool.workers + 1 : want;
}

static void mb_pool_parallel(mb_task_fn fn, void *ctx, int64_t n, int nth) {
    if (nth > MB_POOL_MAX) nth = MB_POOL_MAX;
    if (nth <= 1 || n <= 1 || pthread_mutex_trylock(&mb_pool.submit) != 0) {
        fn(ctx, 0, n);                          /* one thread, or the pool is busy */
        return;
    }
    nth = mb_pool_grow(nth);
    if (nth <= 1) {
        pthread_mutex_unlock(&mb_pool.submit);
        fn(ctx, 0, n);
        return;
    }
    int64_t C = (int64_t)nth * MB_CHUNKS_PER_THREAD;
    if (C > n) C = n;
    if (C > 0xFFFF) C = 0xFFFF;
    const uint32_t g = atomic_load(&mb_pool.gen) + 1;
    mb_pool.fn = fn;
    mb_pool.ctx = ctx;
    mb_pool.n = n;
    mb_pool.chunks = C;
    atomic_store_explicit(&mb_pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&mb_pool.nth, nth, memory_order_relaxed);
    for (int t = 0; t < nth; t++)
        atomic_store_explicit(&mb_pool.cur[t].word,
                              mb_pack(g, (uint32_t)(t * C / nth), (uint32_t)((t + 1) * C / nth)),
                              memory_order_release);
    atomic_store(&mb_pool.gen, g);                              /* publish (seq_cst) */
    if (atomic_load(&mb_pool.sleepers) > 0) {
        pthread_mutex_lock(&mb_pool.mu);
        pthread_cond_broadcast(&mb_pool.cv);
        pthread_mutex_unlock(&mb_pool.mu);
    }
    mb_pool_work(0, g, nth);
    for (unsigned i = 1; atomic_load_explicit(&mb_pool.done, memory_order_acquire) < C; i++) {
        if (i < 4096) MB_PAUSE();
        else sched_yield();                     /* a chunk in flight on a descheduled thread */
    }
    pthread_mutex_unlock(&mb_pool.submit);
}

static int mb_pool_workers(void) { return mb_pool.workers; }

#else   /* no pthreads */

static void mb_pool_init(void) { }
static void mb_pool_parallel(mb_task_fn fn, void *ctx, int64_t n, int nth) { (void)nth; fn(ctx, 0, n); }
static int mb_pool_workers(void) { return 0; }

#endif

static volatile int mb_pool_simd_allowed = 1;
static volatile int mb_pool_vnni_allowed = 1;

/* MINIBIT_NO_VNNI set to anything but "" or "0" when _rt is imported: VNNI kernels off */
static void mb_pool_read_env(void) {
    const char *v = getenv("MINIBIT_NO_VNNI");
    mb_pool_vnni_allowed = (v && v[0] && strcmp(v, "0") != 0) ? 0 : 1;
}

static const mb_rt_api mb_pool_api = { MB_RT_ABI, (volatile int *)&mb_pool_simd_allowed,
                                       mb_pool_parallel, (volatile int *)&mb_pool_vnni_allowed };

#endif /* MB_POOL_H */
