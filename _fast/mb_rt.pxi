# The twins' shared switches, included by every _fast/*.pyx that runs C loops:
#   include "mb_rt.pxi"
# binds this module's copy of mb_rt.h to the one switch and pool of minibit._fast._rt, and
# gives the module the test hooks _set_simd / _simd, _set_vnni / _vnni and _threads (the kernel thread count).

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t as _mb_int64_t

cdef extern from "mb_rt.h" nogil:
    ctypedef void (*mb_task_fn)(void *ctx, _mb_int64_t i0, _mb_int64_t i1) noexcept nogil
    int mb_rt_bind(const void *api)
    int mb_simd()
    void mb_parallel(mb_task_fn fn, void *ctx, _mb_int64_t n, int nth)

from minibit._fast import _rt as _mb_rt

if mb_rt_bind(PyCapsule_GetPointer(_mb_rt._api, b"minibit._fast._rt._api")) != 0:
    raise ImportError("minibit._fast._rt is from another build (rebuild the extensions)")


def _set_simd(on):
    """Allow (True) or forbid (False) the AVX2 code of every twin; returns the previous
    setting (tests)."""
    return _mb_rt.set_simd(on)


def _simd():
    """'avx2' or 'scalar': the code path the twins take now."""
    return _mb_rt.simd()


def _set_vnni(on):
    """Allow (True), restrict to AVX-VNNI ("avxvnni") or forbid (False) the VNNI kernels of
    every twin; returns the previous setting (tests)."""
    return _mb_rt.set_vnni(on)


def _vnni():
    """'avx512vnni', 'avxvnni', 'off' or 'absent': the VNNI kernels that run now (_rt.vnni)."""
    return _mb_rt.vnni()


def _threads():
    """The kernels' thread count: minibit.kernels.get_threads()."""
    import minibit.kernels as kernels
    return kernels.get_threads()
