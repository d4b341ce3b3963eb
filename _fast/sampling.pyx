# cython: language_level=3
"""Twin of minibit/sampling.py: the same chain in C loops, the same token for the same seed.

The candidate order comes from a C sort of (logit, id) pairs with the reference's tie rule
(higher logit first, then lower id); with top-k only the k best are selected (a bounded
heap) before sorting.  Running sums are sequential, as np.cumsum; np.exp is shared.
"""

import numpy as np
cimport numpy as cnp
from libc.stdlib cimport qsort, malloc, free

from minibit import sampling as _ref

cnp.import_array()

ctypedef struct Cand:
    double v
    Py_ssize_t i


cdef int _cmp(const void* a, const void* b) noexcept nogil:
    cdef const Cand* x = <const Cand*>a
    cdef const Cand* y = <const Cand*>b
    if x.v > y.v:
        return -1
    if x.v < y.v:
        return 1
    return -1 if x.i < y.i else (1 if x.i > y.i else 0)


cdef inline bint _worse(Cand a, Cand b) noexcept nogil:
    """a ranks after b in the candidate order."""
    return a.v < b.v or (a.v == b.v and a.i > b.i)


cdef void _sift_down(Cand* h, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Min-heap on rank: the worst candidate at the root."""
    cdef Py_ssize_t c
    cdef Cand t
    while True:
        c = 2 * k + 1
        if c >= n:
            return
        if c + 1 < n and _worse(h[c + 1], h[c]):
            c += 1
        if not _worse(h[c], h[k]):
            return
        t = h[c]; h[c] = h[k]; h[k] = t
        k = c


def candidates(logits, history, params):
    x = _ref.apply_penalties(logits, history, params.repeat_penalty, params.frequency_penalty,
                             params.presence_penalty, params.penalty_last_n)
    cdef double[::1] xv = x
    cdef Py_ssize_t V = x.shape[0], i, best = 0, n, k
    if params.temperature <= 0:
        for i in range(1, V):
            if xv[i] > xv[best]:
                best = i
        return np.array([best]), np.ones(1)
    cdef double temp = params.temperature
    for i in range(V):
        xv[i] = xv[i] / temp
    k = params.top_k if 0 < params.top_k < V else V
    cdef Cand* c = <Cand*>malloc(V * sizeof(Cand))
    if c == NULL:
        raise MemoryError()
    try:
        with nogil:
            if k < V:
                for i in range(k):
                    c[i].v = xv[i]; c[i].i = i
                for i in range(k // 2 - 1, -1, -1):
                    _sift_down(c, k, i)
                for i in range(k, V):
                    if c[0].v < xv[i]:          # strictly better than the worst kept
                        c[0].v = xv[i]; c[0].i = i
                        _sift_down(c, k, 0)
            else:
                for i in range(V):
                    c[i].v = xv[i]; c[i].i = i
            qsort(c, k, sizeof(Cand), _cmp)
        order = np.empty(k, dtype=np.int64)
        z = np.empty(k, dtype=np.float64)
        for i in range(k):
            order[i] = c[i].i
            z[i] = c[i].v
    finally:
        free(c)
    p = np.exp(z - z[0])
    cdef double[::1] pv = p
    cdef double total = 0.0, thr
    cum = np.empty(k, dtype=np.float64)
    cdef double[::1] cv = cum
    for i in range(k):
        total += pv[i]
        cv[i] = total
    n = k
    if params.top_p < 1.0:
        thr = params.top_p * cv[k - 1]
        for i in range(k):
            if cv[i] >= thr:
                n = min(n, i + 1)
                break
    if params.min_p > 0.0:
        thr = params.min_p * pv[0]
        k = 0
        for i in range(n):                      # a count, as the reference: a prefix when
            if pv[i] >= thr:                    # p descends, and the same number if not
                k += 1
        n = k
    return order[:n], p[:n]


def sample(logits, history, params, rng):
    ids, p = candidates(logits, history, params)
    if params.temperature <= 0:
        return int(ids[0])
    cdef double[::1] pv = p
    cdef Py_ssize_t n = p.shape[0], i
    cdef double total = 0.0, u
    for i in range(n):
        total += pv[i]
    u = rng.random() * total
    total = 0.0
    for i in range(n):
        total += pv[i]
        if total > u:
            return int(ids[i])
    return int(ids[n - 1])
