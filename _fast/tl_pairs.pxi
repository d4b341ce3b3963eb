# Shared by the TL1 and TL2 twins (include "tl_pairs.pxi"): the pair byte both layouts store
# (all of TL1; the last two_k columns of TL2), and the argument checks of unpack.
# Codes are reached through row pointers: row = &codes[m, 0], so row[k] is codes[m, k].


cdef inline cnp.uint8_t _pair_byte(const cnp.int8_t *row, Py_ssize_t k) noexcept nogil:
    """The byte of the four codes row[k..k+3]: (3 a + b + 4) << 4 | (3 c + d + 4)."""
    cdef int hi = 3 * row[k] + row[k + 1] + 4, lo = 3 * row[k + 2] + row[k + 3] + 4
    return <cnp.uint8_t>((hi << 4) | lo)


cdef inline int _pair_codes(cnp.uint8_t byte, cnp.int8_t *row, Py_ssize_t k) noexcept nogil:
    """The inverse of _pair_byte: row[k..k+3] from byte.  A nibble over 8 (no pair of codes
    has it) writes zeros and returns 1, so the caller can let the reference raise."""
    cdef int hi = byte >> 4, lo = byte & 15, bad = 0
    if hi > 8 or lo > 8:
        bad, hi, lo = 1, 4, 4
    row[k] = <cnp.int8_t>(hi // 3 - 1)
    row[k + 1] = <cnp.int8_t>(hi % 3 - 1)
    row[k + 2] = <cnp.int8_t>(lo // 3 - 1)
    row[k + 3] = <cnp.int8_t>(lo % 3 - 1)
    return bad


cdef object _unpack_input(ref, data, M, K, BM, BK, bm):
    """The reference's parameter checks, then data as contiguous uint8 [ref.nbytes(M, K)], or
    None when it is not that (the caller then lets ref.unpack raise its FormatError)."""
    ref.check_params(M, K, BM, BK, bm)
    d = np.asarray(data)
    if d.dtype != np.uint8 or d.ndim != 1 or d.size != ref.nbytes(M, K):
        return None
    return np.ascontiguousarray(d)
