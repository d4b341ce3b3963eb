# cython: language_level=3
"""The process-wide switchboard of the twins: one SIMD switch and one thread pool.

Not a twin (no reference module): every twin binds to it at import through
``_fast/mb_rt.pxi`` (a table of C pointers in the capsule ``_api``), so the switch and the
worker threads exist once per process.  The pool is ``_fast/mb_pool.h``: persistent
spin-then-sleep workers, work split by rows with stealing, fork-safe (pthread_atfork: a
forked child starts fresh workers on its first parallel call).
"""

from cpython.pycapsule cimport PyCapsule_New

cdef extern from "mb_pool.h" nogil:
    ctypedef struct mb_rt_api:
        pass
    const mb_rt_api mb_pool_api
    volatile int mb_pool_simd_allowed
    volatile int mb_pool_vnni_allowed
    void mb_pool_init()
    void mb_pool_read_env()
    int mb_pool_workers()
    int mb_cpu_has_avx2()
    int mb_cpu_has_avx512vnni()
    int mb_cpu_has_avxvnni()

mb_pool_init()
mb_pool_read_env()

_api = PyCapsule_New(<void *>&mb_pool_api, b"minibit._fast._rt._api", NULL)


def set_simd(on):
    """Allow (True) or forbid (False) the AVX2 code in every twin; returns the previous
    setting (tests run both paths)."""
    global mb_pool_simd_allowed
    old = bool(mb_pool_simd_allowed)
    mb_pool_simd_allowed = 1 if on else 0
    return old


def simd():
    """'avx2' or 'scalar': the code path the twins take now."""
    return "avx2" if (mb_pool_simd_allowed and mb_cpu_has_avx2()) else "scalar"


def workers():
    """Worker threads the pool has started in this process (the caller is not counted)."""
    return mb_pool_workers()


def set_vnni(on):
    """Allow (True: the best the CPU has, AVX-512 VNNI before AVX-VNNI), restrict to the
    256-bit AVX-VNNI kernels ("avxvnni") or forbid (False) the VNNI kernels in every twin;
    returns the previous setting.  Every path gives the same bits; the start value is False
    when MINIBIT_NO_VNNI is set (not "" or "0") at import (A/B timing, tests)."""
    global mb_pool_vnni_allowed
    old = {0: False, 1: True, 2: "avxvnni"}[mb_pool_vnni_allowed]
    if on == "avxvnni":
        mb_pool_vnni_allowed = 2
    elif isinstance(on, str):
        raise ValueError(f"set_vnni takes True, False or 'avxvnni', got {on!r}")
    else:
        mb_pool_vnni_allowed = 1 if on else 0
    return old


def vnni():
    """The VNNI kernels that run now: 'avx512vnni' or 'avxvnni'; 'off' when the switches
    forbid them (or the AVX2 switch is off); 'absent' when the CPU or OS has neither."""
    if not (mb_cpu_has_avx512vnni() or mb_cpu_has_avxvnni()):
        return "absent"
    if not (mb_pool_simd_allowed and mb_cpu_has_avx2()):
        return "off"
    if mb_pool_vnni_allowed == 1 and mb_cpu_has_avx512vnni():
        return "avx512vnni"
    if mb_pool_vnni_allowed >= 1 and mb_cpu_has_avxvnni():
        return "avxvnni"
    return "off"
