# One thread-pool job over several weights' row tiles (q/k/v, or gate/up, on the same
# activations), included by the twins that group their products (mad.pyx, tq.pyx):
#   include "mb_group.pxi"     (after mb_rt.pxi)
# Each weight keeps its own job and tile function; the group numbers the tiles of all of
# them in order, so one mb_parallel call runs them all and no thread waits between weights.

cdef enum:
    MB_MAX_GROUP = 8             # weights per group job (more: one job each)


ctypedef struct MbGroup:
    mb_task_fn fn                      # runs tiles [i0, i1) of one weight's job
    void *job[MB_MAX_GROUP]
    int n
    _mb_int64_t first[MB_MAX_GROUP + 1]    # weight k owns items [first[k], first[k + 1])


cdef void _mb_group_items(void *ctx, _mb_int64_t i0, _mb_int64_t i1) noexcept nogil:
    """Items [i0, i1) of a group: item i is tile i - first[k] of weight k."""
    cdef const MbGroup *g = <const MbGroup *>ctx
    cdef int k = 0
    cdef _mb_int64_t i
    for i in range(i0, i1):
        while g.first[k + 1] <= i:
            k += 1
        g.fn(g.job[k], i - g.first[k], i - g.first[k] + 1)


cdef inline MbGroup _mb_group(mb_task_fn fn) noexcept:
    """An empty group whose weights' tiles run with fn."""
    cdef MbGroup g
    g.fn, g.n, g.first[0] = fn, 0, 0
    return g


cdef inline void _mb_group_add(MbGroup *g, void *job, _mb_int64_t tiles) noexcept:
    """Append one weight's job and its tile count."""
    g.job[g.n] = job
    g.first[g.n + 1] = g.first[g.n] + tiles
    g.n += 1


cdef void _mb_group_run(MbGroup *g, _mb_int64_t mac):
    """Run every tile of the group: on the kernels' thread count (capped at the tile count)
    when the group's multiply-adds reach the module's MIN_PARALLEL_MAC, else on one thread."""
    cdef _mb_int64_t items = g.first[g.n]
    cdef int nth = _threads() if mac >= MIN_PARALLEL_MAC else 1
    if nth > items:
        nth = <int>items
    if nth < 1:
        nth = 1
    with nogil:
        mb_parallel(_mb_group_items, g, items, nth)


def _mb_group_empty(rows):
    """The result of a group call with no tokens: a float32 [0, rows[i]] per weight."""
    return tuple(np.empty((0, int(r)), dtype=np.float32) for r in rows)
