"""ggml's float arithmetic on x86 AVX2, as the engines compute a BitNet block.

The profiles "bitnet.cpp" and "llama.cpp" are whole engines, not only their linear layers:
around the ternary products, ggml normalizes, rotates, attends and projects in float32 in
its own order, with its own exp, and rounds some operands to float16.  Each rule below
copies one ggml CPU function, as compiled for x86 with AVX2, FMA and F16C (no AVX512): the
source is bitnet.cpp's October 2024 release with its llama.cpp fork 406a5036
(``3rdparty/llama.cpp/ggml/src/ggml.c`` and ``llamafile/sgemm.cpp``), built with clang.
Where clang fused a product into an add, the rule says so (read from the built
``libggml.so``): ``fmaf`` below is one rounding, every other operation one rounding each.

rms_norm     ggml_compute_forward_rms_norm_f32: sum of float32 squares in DOUBLE, in order;
             mean = (float)(sum / n); scale = 1.0f / sqrtf(mean + eps); y = x * scale; then
             ggml_mul by the weight (llm_build_norm)
rope_neox    ggml_rope_cache_init + ggml_compute_forward_rope_f32 (NeoX pairing i, i + d/2):
             theta_scale = powf(base, -2.0f / d); theta starts at (float)pos and is
             multiplied by theta_scale once per pair; cos = cosf(theta), sin = sinf(theta)
             (libm); out_i = fmaf(x_i, cos, -(x_j * sin)), out_j = fmaf(x_i, sin, x_j * cos)
v_expf       ggml_v_expf (AVX2): the ARM optimized-routines exp with FMA steps, bit-exact
silu         ggml_vec_silu_f32: ggml_v_silu = x / (1 + v_expf(0 - x)) for each full group
             of 8 from the row start; libm's expf (x / (1 + expf(-x))) for the rest
vec_dot_f16  ggml_vec_dot_f16 (AVX2 GGML_F16_STEP 32): four 8-lane FMA accumulators over
             steps of 32; reduced (a0 + a2) + (a1 + a3), then the two 128-bit halves, then two
             horizontal adds; the tail (n % 32) added in double
vec_dot_f32  ggml_vec_dot_f32: the same on float32 inputs (the tail in float, fused)
tinyblas     llamafile_sgemm's tinyBLAS<8, __m256> (batches of two or more rows, k % 8 == 0):
             one 8-lane FMA accumulator over steps of 8, then hsum: the high and low
             halves added, then (v0 + v2) + (v1 + v3)
softmax      ggml_compute_forward_soft_max_f32: x * scale, + mask (-inf above the diagonal),
             max; e = v_expf(x - max) by groups of 8, each group's float sum (the hsum
             order) added in double; e * (float)(1.0 / sum)

Where ggml's matrix products go (ggml_compute_forward_mul_mat, llamafile_sgemm): a
product with two or more right-hand rows and a contiguous right-hand side of a type tinyBLAS
takes runs tinyBLAS; otherwise the right-hand side is first converted to the left's
``vec_dot_type`` (float16 for an F16 matrix: one more rounding) and each output is one
ggml_vec_dot.  The two engines differ in which right-hand type tinyBLAS takes with an F16
matrix on AVX2 (``ENGINES``):

* bitnet.cpp (2024 fork): float32 only.  With an F16 KV cache, q . K (q is a permuted view,
  not contiguous) rounds q to F16 and runs vec_dot_f16; p . V (V stored transposed) runs
  tinyBLAS on float32 p in a batch, and rounds p to F16 for vec_dot_f16 in token-by-token
  decode; the F16 LM head likewise: tinyBLAS on float32 rows in a batch, F16 + vec_dot_f16
  for one row.
* llama.cpp (llama-cpp-python 0.3.36's vendored llama.cpp, ggml-cpu/llamafile/sgemm.cpp):
  float16 only.  In a batch q, p and the head's input are all rounded to F16 and tinyBLAS
  runs; one row runs vec_dot_f16 on the same F16 values.

An F32 KV cache: q . K is vec_dot_f32 (q is not contiguous and already F32); p . V is
tinyBLAS (batch) or vec_dot_f32 (one row), in both engines.

attention is the non-flash graph (llm_build_kqv / build_attn_mha with V transposed) or, for
llama.cpp with flash attention on (its default "auto" on the CPU: ENGINES), flash_attn:

flash_attn   ggml_compute_forward_flash_attn_ext_f16 (F16 K and V; an F32 cache is cast to
             F16 by the graph).  Fewer than 64 query rows: each row alone (one_chunk), q
             rounded to F16, s = vec_dot_f16(k, q) * scale, online softmax over the positions
             in order with libm's expf for ms = expf(M - s) and vs = expf(s - M), the
             accumulator rounded to F16 after each ggml_vec_scale_f16 / ggml_vec_mad_f16
             (fmaf(v, vs, acc)), S = fmaf(S, ms, vs) (gcc fused it), out = acc * (1.0f / S).
             64 or more (GGML_FA_TILE_Q): tiles of 64 positions (ggml_..._tiled), q in
             float32, q . k and p . V as simd_gemm's per-element fmaf chains, the max update
             with libm's expf, p = v_expf(kq - M) and the tile's sum in double as softmax.

Masked positions (after the query's own) get exactly 0 from v_expf(-inf), and the KV
cache view ggml multiplies is padded with those zeros up to a multiple of 32; the lane
sums below pad with zeros the same way, which adds nothing.

Everything here is float32 NumPy except where double is named; the compiled twin
(minibit._fast.ggml) repeats it bit for bit.

Coverage.  Copied: x86 builds with AVX2, FMA and F16C and without AVX-512 (what the peers
in tools/peers are built as), any thread count (each output is one thread's work in ggml
too), batch and token-by-token, F16 and F32 KV caches, archs "bitnet" and "llama", llama.cpp
with and without flash attention.  Not copied: AVX-512 builds (tinyBLAS, the softmax sums
and SiLU then work in 16 lanes), ARM, the 2024 fork's flash attention (off by default; with
an F32 cache it crashes), and llama.cpp's third flash variant at two or more threads: one
query row over a KV view of 512 cells or more (a decode past position 256 with a context of
512 or more) is split across the threads and the parts merged, which changes the bits with
the thread count (at one thread it is the row kernel's arithmetic).
Measured against the engines: tests/test_ggml.py, tests/test_peers.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np

from ..kernels.dense import fmaf

__all__ = ["ENGINES", "fmaf", "f16", "rms_norm", "rope_tables", "rope_neox", "v_expf", "silu",
           "vec_dot_f16", "vec_dot_f32", "tinyblas", "softmax", "attention", "flash_attn",
           "FA_TILE", "lm_head", "TWINNED"]

TWINNED = ("rms_norm", "rope_tables", "rope_neox", "v_expf", "silu", "vec_dot_f16", "vec_dot_f32",
           "tinyblas", "attention", "flash_attn", "lm_head")

F32 = np.float32

# what differs between the two engines' float paths (module docstring)
#   f16_tinyblas_rhs: tinyBLAS with an F16 matrix takes an F16 right-hand side (the rows
#                     are rounded first), else a float32 one
#   tq_fused:         the TQ x Q8_K lanes fuse product and add (llama.cpp's gcc build; the
#                     2024 fork is built with clang, which keeps them apart): kernels/tq.py
#   flash_attn:       the engine's default attention on the CPU: llama.cpp's "auto" turns
#                     flash attention on, the 2024 fork leaves it off (tools/peers/README.md)
ENGINES = {
    "bitnet.cpp": {"f16_tinyblas_rhs": False, "tq_fused": False, "flash_attn": False},
    "llama.cpp": {"f16_tinyblas_rhs": True, "tq_fused": True, "flash_attn": True},
}


# ---- exact helpers ------------------------------------------------------------------------

def f16(x) -> np.ndarray:
    """x rounded to float16 (nearest even, as F16C's vcvtps2ph) and widened back (exact)."""
    with np.errstate(over="ignore"):
        return np.asarray(x, F32).astype(np.float16).astype(F32)


@functools.lru_cache(maxsize=None)
def _libm():
    lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    for name in ("cosf", "sinf", "expf"):
        getattr(lib, name).restype = ctypes.c_float
        getattr(lib, name).argtypes = [ctypes.c_float]
    lib.powf.restype = ctypes.c_float
    lib.powf.argtypes = [ctypes.c_float, ctypes.c_float]
    return lib


def _libm_map(name: str, x: np.ndarray) -> np.ndarray:
    """The C library's float function ``name`` on every element (the engine calls the same
    libm; NumPy's own cos/sin/exp are other functions)."""
    f = getattr(_libm(), name)
    x = np.asarray(x, F32)
    return np.fromiter((f(float(v)) for v in x.reshape(-1)), F32, x.size).reshape(x.shape)


# ---- RMSNorm ---------------------------------------------------------------------------------

def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """[T, n] float32: ggml_compute_forward_rms_norm_f32 then ggml_mul by the weight.

    sum   = x0*x0 + x1*x1 + ...   each square in float32, the sum in double, in order
    mean  = (float)(sum / n)
    scale = 1.0f / sqrtf(mean + eps)          (eps a float32)
    y     = (x * scale) * weight
    """
    x = np.ascontiguousarray(x, F32)
    sq = (x * x).astype(np.float64)
    total = np.cumsum(sq, axis=1)[:, -1] if x.shape[1] else np.zeros(x.shape[0])  # in order
    mean = (total / x.shape[1]).astype(F32)
    scale = F32(1) / np.sqrt(mean + F32(eps))
    return (x * scale[:, None]) * np.asarray(weight, F32)


# ---- RoPE ---------------------------------------------------------------------------------

def rope_tables(positions, n_dims: int, base: float):
    """cos, sin float32 [T, n_dims/2] as ggml_rope_cache_init builds them (freq_scale 1, no
    YaRN, attn_factor 1): theta_0 = (float)pos, theta_{i+1} = theta_i * powf(base, -2.0f/d)."""
    lib = _libm()
    theta_scale = F32(lib.powf(F32(base), F32(-2.0) / F32(n_dims)))
    pos = np.asarray(positions).reshape(-1)
    half = n_dims // 2
    theta = np.empty((pos.size, half), F32)
    t = pos.astype(F32)
    for i in range(half):
        theta[:, i] = t
        t = t * theta_scale
    return _libm_map("cosf", theta), _libm_map("sinf", theta)


def check_rope(x, cos, sin):
    """x [T, heads, D] with D even, cos and sin [T, D/2] -> all three as float32 arrays, else
    ValueError.  rope_neox and its twin check with this."""
    x = np.ascontiguousarray(x, F32)
    cos, sin = np.ascontiguousarray(cos, F32), np.ascontiguousarray(sin, F32)
    if x.ndim != 3 or cos.ndim != 2 or sin.ndim != 2:
        raise ValueError(f"rope_neox: x [T, heads, D] and cos/sin [T, D/2], got {x.shape}, "
                         f"{cos.shape}, {sin.shape}")
    T, D = x.shape[0], x.shape[2]
    if D % 2 or cos.shape != (T, D // 2) or sin.shape != (T, D // 2):
        raise ValueError(f"rope_neox: x {x.shape} needs an even D and cos/sin of {(T, D // 2)}")
    return x, cos, sin


def rope_neox(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """[T, heads, D] float32, dimension i paired with i + D/2, as clang (the 2024 fork) and
    gcc (llama.cpp) both compiled ``x0*cos - x1*sin`` and ``x0*sin + x1*cos``
    (ggml_compute_forward_rope_f32 / rotate_pairs; read from the built libraries, and
    checked against llama.cpp's rotated q and k):

        out_i = fmaf(x0, cos, -(x1 * sin))          the x1 product rounded, x0's fused
        out_j = fmaf(x0, sin, x1 * cos)

    (x0, x1) is the rotated pair: NeoX's (i, i + D/2), or NORMAL's (2i, 2i + 1) of the
    engine's permuted q/k rows (arch "llama"), which minibit's reader has put back at
    (i, i + D/2).
    """
    x, cos, sin = check_rope(x, cos, sin)
    half = x.shape[2] // 2
    c, s = cos[:, None, :], sin[:, None, :]
    x0, x1 = x[..., :half], x[..., half:]
    out = np.empty_like(x)
    out[..., :half] = fmaf(x0, c, -(x1 * s))
    out[..., half:] = fmaf(x0, s, x1 * c)
    return out


# ---- exp and SiLU -------------------------------------------------------------------------

_EXP_R = F32(float.fromhex("0x1.8p23"))
_EXP_LOG2E = F32(float.fromhex("0x1.715476p+0"))
_EXP_LN2_HI = F32(float.fromhex("0x1.62e4p-1"))
_EXP_LN2_LO = F32(float.fromhex("0x1.7f7d1cp-20"))
_EXP_C = tuple(F32(float.fromhex(h)) for h in
               ("0x1.0e4020p-7", "0x1.573e2ep-5", "0x1.555e66p-3", "0x1.fffdb6p-2",
                "0x1.ffffecp-1"))


def v_expf(x) -> np.ndarray:
    """ggml_v_expf (AVX2), elementwise: float32 -> float32, the same bits.

    z = fmaf(x, log2e, 1.5*2^23); n = z - 1.5*2^23 (round to integer)
    b = fmaf(-n, ln2_lo, fmaf(-n, ln2_hi, x))
    k = 2^n from z's bits; u = b*b
    j = fmaf(fmaf(fmaf(c0, b, c1), u, fmaf(c2, b, c3)), u, c4*b)
    |n| <= 126: fmaf(j, k, k); 126 < |n| <= 192: the scale split in two (s1, s2);
    |n| > 192: s1*s1 (0 or inf).
    """
    x = np.asarray(x, F32)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        z = fmaf(x, _EXP_LOG2E, _EXP_R)
        n = z - _EXP_R
        b = fmaf(-n, _EXP_LN2_LO, fmaf(-n, _EXP_LN2_HI, x))
        e = z.view(np.uint32) << np.uint32(23)
        k = (e + F32(1).view(np.uint32)).view(F32)
        an = np.abs(n)
        c = an > F32(126)
        u = b * b
        c0, c1, c2, c3, c4 = _EXP_C
        j = fmaf(fmaf(fmaf(c0, b, c1), u, fmaf(c2, b, c3)), u, c4 * b)
        normal = fmaf(j, k, k)
        if not np.any(c):
            return normal
        g = np.where(n <= 0, np.uint32(0x82000000), np.uint32(0))
        s1 = (g + np.uint32(0x7f000000)).view(F32)
        s2 = (e - g).view(F32)
        d = an > F32(192)
        return np.where(d, s1 * s1, np.where(c, fmaf(s2, j, s2) * s1, normal)).astype(F32)


def silu(x: np.ndarray) -> np.ndarray:
    """ggml_vec_silu_f32 on each row of x [T, n]: ggml_v_silu on every full group of 8 from
    the row start, x / (1.0f + expf(-x)) with libm's expf on the n % 8 rest."""
    x = np.ascontiguousarray(x, F32)
    n8 = x.shape[-1] & ~7
    out = np.empty_like(x)
    with np.errstate(over="ignore"):
        head = x[..., :n8]
        out[..., :n8] = head / (F32(1) + v_expf(F32(0) - head))
        if n8 < x.shape[-1]:
            tail = x[..., n8:]
            out[..., n8:] = tail / (F32(1) + _libm_map("expf", -tail))
    return out


# ---- dot products -------------------------------------------------------------------------

def _hadd_reduce(acc: np.ndarray) -> np.ndarray:
    """GGML_F32x8_REDUCE on [..., 4, 8] accumulators -> [...] float32."""
    a = acc[..., 0, :] + acc[..., 2, :]
    b = acc[..., 1, :] + acc[..., 3, :]
    c = a + b
    t0 = c[..., 0:4] + c[..., 4:8]                              # low half + high half
    return (t0[..., 0] + t0[..., 1]) + (t0[..., 2] + t0[..., 3])   # two _mm_hadd_ps


def _steps(x: np.ndarray, y: np.ndarray, width: int, lanes_shape):
    """FMA accumulators over full steps of ``width`` elements: [..., *lanes_shape]."""
    n = x.shape[-1]
    lead = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    acc = np.zeros(lead + tuple(lanes_shape), F32)
    for i in range(0, n - n % width, width):
        xa = x[..., i:i + width].reshape(x.shape[:-1] + tuple(lanes_shape))
        ya = y[..., i:i + width].reshape(y.shape[:-1] + tuple(lanes_shape))
        acc = fmaf(xa, ya, acc)
    return acc


def vec_dot_f16(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_f16 over the last axis of two float16-valued float32 arrays (broadcast):
    [...] float32.  The 32-element steps run in four 8-lane FMA accumulators; the tail adds
    float32 products in double."""
    x, y = np.asarray(x, F32), np.asarray(y, F32)
    n = x.shape[-1]
    total = _hadd_reduce(_steps(x, y, 32, (4, 8))).astype(np.float64)
    for i in range(n - n % 32, n):
        total = total + (x[..., i] * y[..., i]).astype(np.float64)
    return total.astype(F32)


def vec_dot_f32(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_f32: as vec_dot_f16 on float32 inputs, but the tail stays in float32
    (clang fuses ``sumf += x[i]*y[i]``)."""
    x, y = np.asarray(x, F32), np.asarray(y, F32)
    n = x.shape[-1]
    total = _hadd_reduce(_steps(x, y, 32, (4, 8)))
    for i in range(n - n % 32, n):
        total = fmaf(x[..., i], y[..., i], total)
    return total


def tinyblas(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One output of tinyBLAS<8, __m256> over the last axis (k % 8 == 0): [...] float32."""
    a, b = np.asarray(a, F32), np.asarray(b, F32)
    assert a.shape[-1] % 8 == 0
    acc = _steps(a, b, 8, (8,))
    v = acc[..., 4:8] + acc[..., 0:4]
    return (v[..., 0] + v[..., 2]) + (v[..., 1] + v[..., 3])


def _pad(a: np.ndarray, mult: int, axis: int = -1) -> np.ndarray:
    n = a.shape[axis]
    extra = -n % mult
    if not extra:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    return np.pad(a, widths)


# ---- attention ----------------------------------------------------------------------------

def softmax(scores: np.ndarray, allowed: np.ndarray, scale) -> np.ndarray:
    """ggml_compute_forward_soft_max_f32 on rows [..., S] (S a multiple of 8) with a 0/-inf
    mask: w = scores * scale + mask; e = v_expf(w - max w) by groups of 8; each group's sum
    in the hsum order, the group sums added in double; p = e * (float)(1.0 / sum)."""
    with np.errstate(invalid="ignore", over="ignore"):
        w = scores * F32(scale)
        w = np.where(allowed, w, F32(-np.inf))
        m = w.max(axis=-1, keepdims=True)
        e = v_expf(w - m)
        g = e.reshape(e.shape[:-1] + (-1, 8))
        v = g[..., 4:8] + g[..., 0:4]
        hs = ((v[..., 0] + v[..., 2]) + (v[..., 1] + v[..., 3])).astype(np.float64)
        total = np.zeros(hs.shape[:-1], np.float64)
        for i in range(hs.shape[-1]):                       # in order, in double
            total = total + hs[..., i]
        inv = (1.0 / total).astype(F32)
        return e * inv[..., None]


def _interleave(x: np.ndarray) -> np.ndarray:
    """Each head's last axis from minibit's (i, i + D/2) halves to the engine's pairs."""
    D = x.shape[-1]
    return np.ascontiguousarray(x.reshape(x.shape[:-1] + (2, D // 2)).swapaxes(-1, -2)
                                ).reshape(x.shape)


def check_qkv(q, k, v, start, interleaved: bool, what: str):
    """q [T, H, D] (as float32); k, v float32 or float16 [G, start + T, D] of one dtype, G
    dividing H (and D even when interleaved) -> (q, k, v, start) as arrays and int, else
    ValueError naming ``what``.  Both attention kernels and their twins check with this."""
    q = np.asarray(q, F32)
    if q.ndim != 3:
        raise ValueError(f"{what}: q must have 3 dimensions, got shape {q.shape}")
    k, v = np.asarray(k), np.asarray(v)
    if k.dtype not in (np.float32, np.float16) or v.dtype != k.dtype or k.ndim != 3:
        raise ValueError(f"{what}: k, v must be float32 or float16 [G, S, D], got "
                         f"{k.dtype} {k.shape} and {v.dtype} {v.shape}")
    T, H, D = q.shape
    G, S, st = k.shape[0], k.shape[1], int(start)
    if (k.shape[2] != D or v.shape != k.shape or G == 0 or H % G or st < 0 or S != st + T
            or (interleaved and D % 2)):
        raise ValueError(f"{what}: q {q.shape}, k {k.shape}, v {v.shape}, start {start}: "
                         f"need k, v [G, start + T, D] with G dividing H")
    return q, k, v, st


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int,
              engine: str = "bitnet.cpp", interleaved: bool = False,
              flash: bool | None = None) -> np.ndarray:
    """Causal grouped-query attention as the engine computes it: its flash-attention kernel
    when ``flash`` (None: the engine's default, ENGINES), else its non-flash graph below.

    q [T, H, D] float32 (after RoPE); k, v [G, S, D] from the KV cache (float16 for an F16
    cache, float32 for F32), S = start + T.  Returns [T, H*D] float32.

    scores: F16 cache: rounded q, vec_dot_f16 (llama.cpp, T >= 2, D % 8 == 0: tinyBLAS);
            F32 cache: vec_dot_f32.
    softmax with scale 1/sqrtf(D).
    p . V:  T >= 2: tinyBLAS over positions (llama.cpp with an F16 cache: on rounded p);
            T == 1: F16: vec_dot_f16 on rounded p; F32: vec_dot_f32.

    interleaved (arch "llama"): the engine holds q and k with each head's dimensions in the
    converter's permuted order (i, i + D/2 side by side), so q . k adds them in that order.
    """
    if ENGINES[engine]["flash_attn"] if flash is None else flash:
        if engine != "llama.cpp":
            raise ValueError(f"{engine}'s flash attention is not copied (only llama.cpp's)")
        return flash_attn(q, k, v, start, interleaved)
    q, k, v, start = check_qkv(q, k, v, start, interleaved, "attention")
    T, H, D = q.shape
    G, S, _ = k.shape
    half = k.dtype == np.float16
    f16_rhs = ENGINES[engine]["f16_tinyblas_rhs"]
    rep = H // G
    if interleaved:                                             # [.., 2, D/2] -> [.., D/2, 2]
        q = _interleave(np.asarray(q, F32))
        k = _interleave(np.asarray(k, F32 if not half else np.float16))
    kk = _pad(np.asarray(k, F32), 8, axis=1)                    # [G, S8, D] zero rows added
    vv = _pad(np.asarray(v, F32), 32, axis=1)                   # [G, S32, D]
    S8 = kk.shape[1]
    qq = f16(q) if half else np.asarray(q, F32)
    qg = qq.reshape(T, G, rep, 1, D)
    if half and f16_rhs and T >= 2 and D % 8 == 0:
        scores = tinyblas(qg, kk[None, :, None])                # [T, G, rep, S8]
    elif half:
        scores = vec_dot_f16(qg, kk[None, :, None])
    else:
        scores = vec_dot_f32(qg, kk[None, :, None])
    allowed = np.arange(S8)[None, :] <= (start + np.arange(T))[:, None]   # [T, S8]
    scale = F32(1) / np.sqrt(F32(D))
    p = softmax(scores, allowed[:, None, None, :], scale)      # [T, G, rep, S8]
    p = _pad(p, 32)                                             # [T, G, rep, S32]
    vt = vv.transpose(0, 2, 1)[None, :, None]                   # [1, G, 1, D, S32]
    if T >= 2:
        pr = f16(p) if (half and f16_rhs) else p
        out = tinyblas(vt, pr[..., None, :])                    # [T, G, rep, D]
    elif half:
        out = vec_dot_f16(vt, f16(p)[..., None, :])
    else:
        out = vec_dot_f32(vt, p[..., None, :])
    return np.ascontiguousarray(out.reshape(T, H * D), F32)


# ---- flash attention (llama.cpp) ------------------------------------------------------------

FA_TILE = 64          # GGML_FA_TILE_Q = GGML_FA_TILE_KV: the tiled kernel's query rows and KV columns


def _expf(x) -> np.ndarray:
    """libm's expf on every element (the flash kernels call the C library's, not ggml's)."""
    return _libm_map("expf", x)


def flash_attn(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int,
               interleaved: bool = False) -> np.ndarray:
    """Causal grouped-query attention as llama.cpp's flash-attention graph computes it
    (build_attn_mha with flash attention, ggml_compute_forward_flash_attn_ext_f16).

    q [T, H, D] float32 (after RoPE); k, v [G, S, D] from the KV cache (float16 or float32),
    S = start + T.  Returns [T, H*D] float32 (the kernel writes each (token, head) row of D
    floats into a [T, H, D] result, reshaped to [T, H*D]).

    The graph casts an F32 cache to F16 first, so both cache types give the same bits.  Head
    h reads kv head h // (H / G).  Two kernels, by the number of query rows T (any thread
    count gives the same bits: each (token, head) row is computed whole by one thread):

    T < 64 (FA_TILE): one row at a time, _fa_rows (one_chunk)
    T >= 64:          tiles of 64 rows x 64 positions, _fa_tiled

    A third, for one query row over a KV view of 512 cells or more, splits the positions
    across the threads and merges the parts; with one thread it is _fa_rows's arithmetic, with
    more it is not copied.

    interleaved: q . k adds each head's dimensions in the engine's permuted order (arch
    "llama", as attention).
    """
    q, k, v, start = check_qkv(q, k, v, start, interleaved, "flash_attn")
    T, H, D = q.shape
    G, S, _ = k.shape
    kk = f16(np.asarray(k, F32))
    vv = f16(np.asarray(v, F32))
    if interleaved:
        q = _interleave(q)
        kk = _interleave(kk)
    allowed = np.arange(S)[None, :] <= (start + np.arange(T))[:, None]      # [T, S]
    scale = F32(1) / np.sqrt(F32(D))
    qg = q.reshape(T, G, H // G, D)
    run = _fa_tiled if T >= FA_TILE else _fa_rows
    return np.ascontiguousarray(run(qg, kk, vv, allowed, scale).reshape(T, H * D), F32)


def _fa_rows(q, k, v, allowed, scale):
    """ggml_compute_forward_flash_attn_ext_f16_one_chunk with F16 K and V, every row [T, G,
    rep] at once, the positions in order (those after the query's own are skipped):

        qh = q rounded to F16;  M = -inf, S = 0, acc[D] = 0 (float16 values)
        for each allowed position i:
            s = vec_dot_f16(k_i, qh) * scale
            s > M:  ms = expf(M - s) (libm), M = s, acc = f16(acc * ms), vs = 1
            else:   ms = 1, vs = expf(s - M) (libm)
            acc = f16(fmaf(v_i, vs, acc))                ggml_vec_mad_f16
            S = fmaf(S, ms, vs)                          (gcc fused it)
        out = (float)acc * (1.0f / S)
    """
    T, G, rep, D = q.shape
    S = k.shape[1]
    qh = f16(q)[:, :, :, None, :]                                   # [T, G, rep, 1, D]
    scores = vec_dot_f16(k[None, :, None], qh) * scale               # [T, G, rep, S]
    M = np.full((T, G, rep), -np.inf, F32)
    total = np.zeros((T, G, rep), F32)
    acc = np.zeros((T, G, rep, D), F32)
    for i in range(S):
        ok = np.broadcast_to(allowed[:, i, None, None], M.shape)
        s = scores[..., i]
        new = ok & (s > M)
        old = ok & ~(s > M)
        ms = np.ones_like(M)
        vs = np.ones_like(M)
        with np.errstate(invalid="ignore"):
            ms[new] = _expf(M[new] - s[new])
            vs[old] = _expf(s[old] - M[old])
        acc = np.where(new[..., None], f16(acc * ms[..., None]), acc)
        mad = f16(fmaf(v[None, :, None, i, :], vs[..., None], acc))
        acc = np.where(ok[..., None], mad, acc)
        total = np.where(ok, fmaf(total, ms, vs), total)
        M = np.where(new, s, M)
    inv = np.where(total == 0, F32(0), F32(1) / np.where(total == 0, F32(1), total))
    return acc * inv[..., None]


def _fa_tiled(q, k, v, allowed, scale):
    """ggml_compute_forward_flash_attn_ext_tiled, F16 K and V widened to float32, q NOT
    rounded.  Per block of 64 positions (a block no position of which a row may see leaves
    the row as it is):

        kq[j]  = fmaf chain over the D dimensions in order, from 0 (simd_gemm), then * scale;
                 -inf where the row may not look
        m      = max kq;  Mnew = max(M, m)
        Mnew > M: ms = expf(M - Mnew) (libm); acc = acc * ms; S = S * ms
        p[j]   = v_expf(kq[j] - Mnew); S = (float)((double)S + the 8 groups' hsums in double,
                 in order)  (ggml_vec_soft_max_f32)
        acc[d] = fmaf chain over the block's positions in order: fmaf(p[j], v_j[d], acc[d])
    out = acc * (1.0f / S)
    """
    T, G, rep, D = q.shape
    S = k.shape[1]
    M = np.full((T, G, rep), -np.inf, F32)
    total = np.zeros((T, G, rep), F32)
    acc = np.zeros((T, G, rep, D), F32)
    for c0 in range(0, S, FA_TILE):
        n = min(FA_TILE, S - c0)
        kt = k[None, :, None, c0:c0 + n, :]                          # [1, G, 1, n, D]
        kq = np.zeros((T, G, rep, FA_TILE), F32)
        for d in range(D):
            kq[..., :n] = fmaf(q[..., d, None], kt[..., d], kq[..., :n])
        kq = kq * scale
        ok = np.zeros((T, FA_TILE), bool)
        ok[:, :n] = allowed[:, c0:c0 + n]
        kq = np.where(ok[:, None, None, :], kq, F32(-np.inf))
        m = kq.max(axis=-1)
        live = m != -np.inf
        Mnew = np.where(live, np.maximum(M, m), M)
        grow = live & (Mnew > M)
        ms = np.ones_like(M)
        with np.errstate(invalid="ignore"):
            ms[grow] = _expf(M[grow] - Mnew[grow])
        acc = np.where(grow[..., None], acc * ms[..., None], acc)
        total = np.where(grow, total * ms, total)
        M = Mnew
        with np.errstate(invalid="ignore"):
            p = v_expf(kq - np.where(live, Mnew, F32(0))[..., None])
        g = p.reshape(p.shape[:-1] + (-1, 8))
        h = g[..., 4:8] + g[..., 0:4]
        hs = ((h[..., 0] + h[..., 2]) + (h[..., 1] + h[..., 3])).astype(np.float64)
        tile = np.zeros(hs.shape[:-1], np.float64)
        for j in range(hs.shape[-1]):
            tile = tile + hs[..., j]
        total = np.where(live, (total.astype(np.float64) + tile).astype(F32), total)
        p = np.where(live[..., None], p, F32(0))
        vt = v[None, :, None, c0:c0 + n, :]                          # [1, G, 1, n, D]
        for j in range(n):
            acc = fmaf(p[..., j, None], vt[..., j, :], acc)
    inv = np.where(total == 0, F32(0), F32(1) / np.where(total == 0, F32(1), total))
    return acc * inv[..., None]


# ---- the LM head --------------------------------------------------------------------------

def check_head(h, W, dtype: str):
    """h [T, hidden] (as float32) and the output matrix W [vocab, hidden] of the named type
    ("F16": float16, "F32": float32) -> (h, W), else ValueError.  lm_head and its twin check
    with this."""
    h = np.ascontiguousarray(h, F32)
    if h.ndim != 2:
        raise ValueError(f"lm_head: h must have 2 dimensions, got shape {h.shape}")
    W = np.asarray(W)
    if dtype not in ("F16", "F32") or W.ndim != 2 or W.shape[1] != h.shape[1] or \
            W.dtype != (np.float16 if dtype == "F16" else np.float32):
        raise ValueError(f"lm_head: a {dtype} matrix {W.dtype} {W.shape} for rows of {h.shape[1]}")
    return h, W


def lm_head(h: np.ndarray, W: np.ndarray, dtype: str, engine: str = "bitnet.cpp") -> np.ndarray:
    """h [T, hidden] float32 @ W.T for the F16 or F32 output matrix W [vocab, hidden].

    T >= 2 and hidden % 8 == 0: tinyBLAS (llama.cpp with an F16 head: on h rounded to F16).
    Otherwise (one row, as in decode): h is converted to W's type (F16: rounded) and each
    logit is one vec_dot.
    """
    h, W = check_head(h, W, dtype)
    Wf = W.astype(F32)
    if h.shape[0] >= 2 and h.shape[1] % 8 == 0:
        if dtype == "F16" and ENGINES[engine]["f16_tinyblas_rhs"]:
            h = f16(h)
        return tinyblas(h[:, None, :], Wf[None, :, :])
    if dtype == "F16":
        return vec_dot_f16(f16(h)[:, None, :], Wf[None, :, :])
    return vec_dot_f32(h[:, None, :], Wf[None, :, :])
