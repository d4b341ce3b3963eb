# Shared by the TL1 and TL2 twins (include "tl_pack.pxi"): their pack
# and unpack, which check the arguments with the reference (_ref) and run the module's own
# _walk over its layout in one direction or the other; and the pair byte both layouts store
# (all of TL1; the last two_k columns of TL2).
# Codes are reached through row pointers: row = &codes[m, 0], so row[k] is codes[m, k].

from minibit.formats._packed import check_codes


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


def pack(codes, BM, BK, bm):
    """int8 codes [M, K] in {-1, 0, 1} -> uint8 [nbytes(M, K)], the bytes of bitnet.cpp's
    converter (transform_to_tl1 / transform_to_tl2); TL2's padding stays zero."""
    codes = check_codes(codes)
    _ref.check_params(codes.shape[0], codes.shape[1], BM, BK, bm)
    cdef const cnp.int8_t[:, ::1] c = codes
    cdef Py_ssize_t M = codes.shape[0], K = codes.shape[1]
    out = np.zeros(_ref.nbytes(M, K), dtype=np.uint8)
    cdef cnp.uint8_t[::1] o = out
    _walk(<cnp.int8_t *>&c[0, 0], &o[0], M, K, BM, BK, bm, True)    # reads the codes only
    return out


def unpack(data, M, K, BM, BK, bm):
    """uint8 [nbytes(M, K)] -> int8 codes [M, K], the inverse of pack (padding not read)."""
    _ref.check_params(M, K, BM, BK, bm)
    d_arr = np.asarray(data)
    if d_arr.dtype != np.uint8 or d_arr.ndim != 1 or d_arr.size != _ref.nbytes(M, K):
        return _ref.unpack(data, M, K, BM, BK, bm)       # raises the reference's FormatError
    cdef const cnp.uint8_t[::1] d = np.ascontiguousarray(d_arr)
    out = np.empty((M, K), dtype=np.int8)
    cdef cnp.int8_t[:, ::1] c = out
    if _walk(&c[0, 0], <cnp.uint8_t *>&d[0], M, K, BM, BK, bm, False):   # reads the bytes only
        return _ref.unpack(data, M, K, BM, BK, bm)       # raises, naming the first bad byte
    return out
