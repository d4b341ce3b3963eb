/* mb_rt.h — the one switchboard every twin shares: the SIMD switch and the thread pool.
 *
 * One process holds one SIMD switch and one pool, owned by the module minibit._fast._rt
 * (mb_pool.h is its implementation).  Every other twin includes this header and, at import,
 * binds to that module's table of pointers (`mb_rt_bind`, done by _fast/mb_rt.pxi), so
 * `_set_simd(False)` in any twin turns the portable code on in all of them, and every
 * twin's parallel loop runs on the same worker threads.
 *
 *   mb_simd()                       AVX2 + F16C allowed and present (the twins' dispatch test)
 *   mb_vnni()                       which VNNI kernels may run: MB_VNNI_512 (AVX-512 VNNI),
 *                                   MB_VNNI_256 (AVX-VNNI, 256-bit VEX) or 0 (a second switch:
 *                                   MINIBIT_NO_VNNI=1 at import, or _rt.set_vnni(False),
 *                                   keeps those kernels on AVX2; set_vnni("avxvnni") allows
 *                                   only the 256-bit ones; every path gives the same bits)
 *   mb_parallel(fn, ctx, n, nth)    fn(ctx, i0, i1) over disjoint ranges covering [0, n), on
 *                                   nth threads (the caller is one of them); returns when all
 *                                   of [0, n) is done.  nth <= 1 calls fn(ctx, 0, n) inline.
 *
 * Which thread runs which range never changes a result: callers give every output element to
 * exactly one range and sum it in a fixed order there.
 */
#ifndef MB_RT_H
#define MB_RT_H

#include <stdint.h>

typedef void (*mb_task_fn)(void *ctx, int64_t i0, int64_t i1);

#define MB_RT_ABI 2

typedef struct mb_rt_api {
    int abi;                                     /* MB_RT_ABI of the module that made it */
    volatile int *simd_allowed;                  /* the switch; 1 = AVX2 where present */
    void (*parallel)(mb_task_fn fn, void *ctx, int64_t n, int nth);
    volatile int *vnni_allowed;                  /* the VNNI switch: 0 off, 1 best present, 2 AVX-VNNI only */
} mb_rt_api;

static const mb_rt_api *mb_rt_table = 0;         /* set by mb_rt_bind at the module's import */

static int mb_rt_bind(const void *api) {
    const mb_rt_api *a = (const mb_rt_api *)api;
    if (!a || a->abi != MB_RT_ABI) return -1;
    mb_rt_table = a;
    return 0;
}

static int mb_cpu_has_avx2(void) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) ? 1 : 0;
    }
    return cached;
#else
    return 0;
#endif
}

/* Compilers that know the VNNI extensions (target attributes, intrinsics, cpu_supports
 * names): an older one builds without those kernels (and reports them absent) rather than
 * fail the module, which would leave its NumPy reference to run. */
#ifndef MB_CC_AVX512VNNI
#  if defined(__clang__)
#    define MB_CC_AVX512VNNI (__clang_major__ >= 8)
#  elif defined(__GNUC__)
#    define MB_CC_AVX512VNNI (__GNUC__ >= 8)
#  else
#    define MB_CC_AVX512VNNI 0
#  endif
#endif
#ifndef MB_CC_AVXVNNI
#  if defined(__clang__)
#    define MB_CC_AVXVNNI (__clang_major__ >= 13)
#  elif defined(__GNUC__)
#    define MB_CC_AVXVNNI (__GNUC__ >= 11)
#  else
#    define MB_CC_AVXVNNI 0
#  endif
#endif

/* AVX-512 F/BW/VL + VNNI (vpdpbusd on 512-bit vectors) with FMA and F16C, and the OS saves
 * the AVX-512 state (__builtin_cpu_supports checks XCR0 too) */
static int mb_cpu_has_avx512vnni(void) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && MB_CC_AVX512VNNI
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = (mb_cpu_has_avx2() && __builtin_cpu_supports("fma")
                  && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                  && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
                 ? 1 : 0;
    }
    return cached;
#else
    return 0;
#endif
}

/* AVX-VNNI (VEX-encoded vpdpbusd, 256-bit) with AVX2, FMA and F16C */
static int mb_cpu_has_avxvnni(void) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && MB_CC_AVXVNNI
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = (mb_cpu_has_avx2() && __builtin_cpu_supports("fma")
                  && __builtin_cpu_supports("avxvnni")) ? 1 : 0;
    }
    return cached;
#else
    return 0;
#endif
}

#define MB_VNNI_256 1
#define MB_VNNI_512 2

/* AVX2 code allowed (the shared switch) and the CPU has it */
static inline int mb_simd(void) {
    return (mb_rt_table ? *mb_rt_table->simd_allowed : 1) && mb_cpu_has_avx2();
}

/* the VNNI kernels that may run: AVX2 allowed, VNNI allowed (the second switch), and the CPU
 * has them -> MB_VNNI_512 (preferred), MB_VNNI_256, or 0 */
static inline int mb_vnni(void) {
    if (!mb_simd()) return 0;
    const int allowed = mb_rt_table ? *mb_rt_table->vnni_allowed : 1;
    if (allowed == 1 && mb_cpu_has_avx512vnni()) return MB_VNNI_512;
    if (allowed >= 1 && mb_cpu_has_avxvnni()) return MB_VNNI_256;
    return 0;
}

static inline void mb_parallel(mb_task_fn fn, void *ctx, int64_t n, int nth) {
    if (n <= 0) return;
    if (nth <= 1 || n == 1 || !mb_rt_table) { fn(ctx, 0, n); return; }
    mb_rt_table->parallel(fn, ctx, n, nth);
}

#endif /* MB_RT_H */
