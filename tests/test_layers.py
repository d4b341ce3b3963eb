"""The block arithmetic (minibit.model.layers): its defined float32 order, both backends.

RMSNorm, RoPE, attention, the gated activations and expf are the NumPy reference; the
Cython twin (minibit._fast.layers) must give the same bits for any shape, SIMD or portable
C, any thread count, and a KV-cache slice as well as a contiguous array.  Independently,
each must agree with a float64 computation of the textbook formula within stated float32
tolerances, and expf within one ulp of the true exponential.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minibit.kernels as kernels
from minibit.model import layers

from conftest import assert_same_bytes, each_simd, twin_pair

finite = dict(allow_nan=False, allow_infinity=False, width=32)


# ---- expf --------------------------------------------------------------------------------

def test_expf_within_one_ulp():
    """Every 97th float32 in [-87.3, 88]: |expf - e^x| < 1 ulp of the result (float64 truth)."""
    bits = np.arange(0, 2**32, 97, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x) & (x > -87.3) & (x < 88.0)]
    got = layers.expf(x).astype(np.float64)
    true = np.exp(x.astype(np.float64))
    ulp = np.spacing(got.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - true) / ulp) < 1.0
    assert layers.expf(np.float32(0)) == 1.0 and layers.expf(np.float32(-0.0)) == 1.0


def test_expf_edges():
    """Sleef's bounds: 0 below -104, +inf above 100, subnormal results in between."""
    x = np.array([-np.inf, -1e30, -104.01, 100.01, 1e30, np.inf, np.nan, -100.0], np.float32)
    got = layers.expf(x)
    assert got[:3].tolist() == [0.0, 0.0, 0.0]
    assert np.isposinf(got[3:6]).all() and np.isnan(got[6])
    assert 0 < got[7] < np.finfo(np.float32).tiny                   # e^-100: subnormal
    assert abs(float(got[7]) - np.exp(-100.0)) <= 2.0**-149            # within one subnormal step


@given(x=st.lists(st.floats(**{**finite, "allow_nan": True, "allow_infinity": True}),
                  min_size=0, max_size=70))
def test_expf_twin_same_bits(x):
    ref, fast = twin_pair("layers")
    x = np.array(x, np.float32)
    each_simd(fast, lambda simd: assert_same_bytes(fast.expf(x), ref.expf(x), f"expf simd={simd}"))


def test_expf_twin_every_exponent():
    """A sweep over 2^20 evenly spaced bit patterns (all exponents, both signs) gives the same
    bits on both backends."""
    ref, fast = twin_pair("layers")
    x = (np.arange(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32)).view(np.float32)
    want = ref.expf(x)
    each_simd(fast, lambda simd: assert_same_bytes(fast.expf(x), want, f"sweep simd={simd}"))


# ---- RMSNorm, RoPE, activations ----------------------------------------------------------

@given(T=st.integers(0, 4), n=st.integers(1, 300), eps=st.sampled_from([1e-5, 1e-6, 0.5]),
       scale=st.sampled_from([1e-3, 1.0, 1e3]), seed=st.integers(0, 2**31 - 1))
def test_rms_norm_twin_and_float64(T, n, eps, scale, seed):
    ref, fast = twin_pair("layers")
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((T, n))).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    want = ref.rms_norm(x, w, eps)
    each_simd(fast, lambda simd: assert_same_bytes(fast.rms_norm(x, w, eps), want, f"simd={simd}"))
    x64 = x.astype(np.float64)
    true = x64 / np.sqrt((x64 * x64).mean(axis=1, keepdims=True) + np.float32(eps)) * w
    np.testing.assert_allclose(want, true, rtol=2e-6, atol=1e-6 * np.abs(true).max(initial=0))


def test_rms_norm_sums_in_torchs_order():
    """torch's cascade sum of 64 squares, written out by hand: 8 vectors v0..v7 of 8 lanes,
    P_k = v_k + v_(k+4), V = ((P0 + P1) + P2) + P3, then from +0 the lanes V[0], V[1], ... in
    order.  rms_norm is weight * (x * (1 / sqrt(that / 64 + eps))) on both backends."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 64)) * np.float32(1e3) ** rng.standard_normal((3, 64))).astype(np.float32)
    v = (x * x).reshape(3, 8, 8)
    P = [v[:, k] + v[:, k + 4] for k in range(4)]
    V = ((P[0] + P[1]) + P[2]) + P[3]
    ss = np.zeros(3, np.float32)
    for lane in range(8):
        ss = ss + V[:, lane]
    assert_same_bytes(layers.torch_sum(x * x), ss, "torch_sum")
    w = np.linspace(-2, 2, 64, dtype=np.float32)
    inv = np.float32(1) / np.sqrt(ss / np.float32(64) + np.float32(1e-5))
    want = w * (x * inv[:, None])
    ref, fast = twin_pair("layers")
    for mod in (ref, fast):
        assert_same_bytes(mod.rms_norm(x, w, 1e-5), want, mod.__name__)


@given(T=st.integers(0, 4), heads=st.integers(1, 5), half=st.integers(1, 40),
       start=st.integers(0, 5000), seed=st.integers(0, 2**31 - 1))
def test_rope_twin_and_rotation(T, heads, half, start, seed):
    ref, fast = twin_pair("layers")
    rng = np.random.default_rng(seed)
    D = 2 * half
    x = rng.standard_normal((T, heads, D)).astype(np.float32)
    cos, sin = ref.rope_tables(np.arange(start, start + T), D, 10000.0)
    want = ref.apply_rope(x, cos, sin)
    each_simd(fast, lambda simd: assert_same_bytes(fast.apply_rope(x, cos, sin), want, f"simd={simd}"))
    # a rotation of each (i, i + D/2) pair: norms kept
    np.testing.assert_allclose(np.linalg.norm(want, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


@given(T=st.integers(0, 4), F=st.integers(1, 100), act=st.sampled_from(["relu2", "silu"]),
       scale=st.sampled_from([1.0, 30.0, 200.0]), seed=st.integers(0, 2**31 - 1))
def test_ffn_act_twin_and_float64(T, F, act, scale, seed):
    ref, fast = twin_pair("layers")
    rng = np.random.default_rng(seed)
    g = (scale * rng.standard_normal((T, F))).astype(np.float32)
    u = rng.standard_normal((T, F)).astype(np.float32)
    want = ref.ffn_act(g, u, act)
    each_simd(fast, lambda simd: assert_same_bytes(fast.ffn_act(g, u, act), want, f"{act} simd={simd}"))
    g64 = g.astype(np.float64)
    with np.errstate(over="ignore"):
        true = (np.maximum(g64, 0) ** 2 if act == "relu2" else g64 / (1 + np.exp(-g64))) * u
    np.testing.assert_allclose(want, true, rtol=1e-6, atol=1e-30)


# ---- attention ---------------------------------------------------------------------------

def _attention64(q, k, v, start):
    """The textbook formula in float64: softmax(q k^T / sqrt(D)) v, causal, grouped."""
    T, H, D = q.shape
    G = k.shape[0]
    out = np.zeros((T, H, D))
    for t in range(T):
        for h in range(H):
            kk = k[h // (H // G), :start + t + 1].astype(np.float64)
            s = kk @ q[t, h].astype(np.float64) / np.sqrt(D)
            p = np.exp(s - s.max())
            out[t, h] = (p / p.sum()) @ v[h // (H // G), :start + t + 1]
    return out.reshape(T, H * D)


@given(T=st.integers(1, 6), start=st.integers(0, 70), G=st.integers(1, 3), rep=st.integers(1, 3),
       D=st.sampled_from([2, 8, 40, 64, 96]), scale=st.sampled_from([0.1, 1.0, 4.0]),
       kv=st.sampled_from(["f32", "f16"]), seed=st.integers(0, 2**31 - 1))
def test_attention_twin_and_float64(T, start, G, rep, D, scale, kv, seed):
    ref, fast = twin_pair("layers")
    rng = np.random.default_rng(seed)
    H, S = G * rep, start + T
    cache = (scale * rng.standard_normal((2, 3, G, S + 4, D))).astype(layers.KV_DTYPES[kv])
    k, v = cache[0, 1, :, :S], cache[1, 2, :, :S]          # KV-cache slices, not copies
    q = (scale * rng.standard_normal((T, H, D))).astype(np.float32)
    want = ref.attention(q, k, v, start)
    assert_same_bytes(ref.attention(q, k.copy(), v.copy(), start), want, "reference on copies")
    # a float16 cache is its values widened (exactly): the same bits as a float32 copy
    assert_same_bytes(ref.attention(q, k.astype(np.float32), v.astype(np.float32), start), want,
                      "widened")
    each_simd(fast, lambda simd: assert_same_bytes(fast.attention(q, k, v, start), want,
                                                     f"simd={simd}"))
    np.testing.assert_allclose(want, _attention64(q, k, v, start), rtol=1e-4,
                               atol=2e-5 * scale)


def test_attention_threads_and_future_values():
    """A prefill large enough for the thread pool: same bits at 1 and 2 threads; and positions after
    a query's own take no part (changing them changes nothing for that query)."""
    ref, fast = twin_pair("layers")
    rng = np.random.default_rng(5)
    T, H, G, D = 48, 8, 2, 64
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    k = rng.standard_normal((G, T, D)).astype(np.float32)
    v = rng.standard_normal((G, T, D)).astype(np.float32)
    want = ref.attention(q, k, v, 0)
    old = kernels.get_threads()
    try:
        for n in (1, 2):
            kernels.set_threads(n)
            assert_same_bytes(fast.attention(q, k, v, 0), want, f"threads={n}")
    finally:
        kernels.set_threads(old)
    # (a row of 20 >= 16 keys: torch's softmax sums a row shorter than its vector lanes in
    # plain order, a longer one by lanes, so a cut below 16 could change the sum's order)
    k2, v2 = k.copy(), v.copy()
    k2[:, 20:], v2[:, 20:] = 1e30, np.nan
    for mod in (ref, fast):
        assert_same_bytes(mod.attention(q[:20], k2[:, :20], v2[:, :20], 0), want[:20], mod.__name__)
        got = mod.attention(q, k2, v2, 0)
        assert_same_bytes(got[:20], want[:20], f"{mod.__name__}: rows before the change")


def test_attention_one_position_is_v():
    """With one position the softmax is exactly 1: the output is v, bit for bit."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 4, 8)).astype(np.float32)
    k = rng.standard_normal((2, 1, 8)).astype(np.float32)
    v = rng.standard_normal((2, 1, 8)).astype(np.float32)
    want = np.repeat(v[:, 0], 2, axis=0).reshape(1, 32)
    ref, fast = twin_pair("layers")
    for mod in (ref, fast):
        assert_same_bytes(mod.attention(q, k, v, 0), want, mod.__name__)


@pytest.mark.parametrize("call, msg", [
    (lambda m: m.attention(np.zeros((2, 4, 8), np.float32), np.zeros((3, 2, 8), np.float32),
                           np.zeros((3, 2, 8), np.float32), 0), "G dividing H"),
    (lambda m: m.attention(np.zeros((2, 4, 8), np.float32), np.zeros((2, 5, 8), np.float32),
                           np.zeros((2, 5, 8), np.float32), 0), "start"),
    (lambda m: m.attention(np.zeros((2, 4, 8), np.float64), np.zeros((2, 2, 8), np.float32),
                           np.zeros((2, 2, 8), np.float32), 0), "float32"),
    (lambda m: m.attention(np.zeros((2, 4, 8), np.float32), np.zeros((2, 2, 8), np.float16),
                           np.zeros((2, 2, 8), np.float32), 0), "k is float16 but v"),
    (lambda m: m.attention(np.zeros((2, 4, 8), np.float16), np.zeros((2, 2, 8), np.float16),
                           np.zeros((2, 2, 8), np.float16), 0), "q must be float32"),
    (lambda m: m.rms_norm(np.zeros((2, 8), np.float32), np.zeros(7, np.float32), 1e-5), "weight"),
    (lambda m: m.apply_rope(np.zeros((2, 1, 7), np.float32), np.zeros((2, 7), np.float32),
                            np.zeros((2, 7), np.float32)), "even D"),
    (lambda m: m.ffn_act(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), "gelu"),
     "unknown activation"),
    (lambda m: m.ffn_act(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), "silu"),
     "differ"),
])
def test_bad_arguments_named(call, msg):
    ref, fast = twin_pair("layers")
    for mod in (ref, fast):
        with pytest.raises(ValueError, match=msg):
            call(mod)


# ---- the KV cache write ------------------------------------------------------------------

@given(T=st.integers(1, 5), G=st.integers(1, 3), D=st.sampled_from([1, 7, 8, 40, 96]),
       start=st.integers(0, 6), kv=st.sampled_from(["f32", "f16"]), seed=st.integers(0, 2**31 - 1))
def test_store_kv_twin(T, G, D, start, kv, seed):
    ref, fast = twin_pair("layers")
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((T, G, D)) * np.exp(rng.uniform(-20, 12, (T, G, D)))).astype(np.float32)
    M = start + T + 2
    want = np.full((G, M, D), 7, layers.KV_DTYPES[kv])
    ref.store_kv(want, start, x)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(want[:, start:start + T], x.transpose(1, 0, 2).astype(want.dtype))
    assert (want[:, :start] == 7).all() and (want[:, start + T:] == 7).all()

    def check(simd):
        got = np.full((G, M, D), 7, layers.KV_DTYPES[kv])
        fast.store_kv(got, start, x)
        assert_same_bytes(got, want, f"{kv} simd={simd}")
    each_simd(fast, check)


def test_store_kv_f16_rounding_every_exponent():
    """float32 -> float16 in the twin (F16C and portable C) equals NumPy's conversion over a
    sweep of 2^20 bit patterns: ties to even, subnormal halves, overflow to inf, signed zero;
    NaN stays NaN."""
    ref, fast = twin_pair("layers")
    x = (np.arange(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32) + 2048).view(np.float32)
    x = np.concatenate([x, np.float32([65504, 65519.996, 65520, 2**-25, 2**-25 * 1.5, 2**-24,
                                       -0.0, 6.1035156e-05, 6.1028e-05])])
    x = x[: x.size // 8 * 8].reshape(-1, 1, 8)
    want = np.zeros((1, x.shape[0], 8), np.float16)
    ref.store_kv(want, 0, x)

    def check(simd):
        got = np.zeros_like(want)
        fast.store_kv(got, 0, x)
        nan = np.isnan(want)
        assert (np.isnan(got) == nan).all(), f"simd={simd}"
        assert_same_bytes(np.where(nan, 0, got), np.where(nan, 0, want), f"simd={simd}")
    each_simd(fast, check)


def test_store_kv_bad_arguments():
    ref, fast = twin_pair("layers")
    for mod in (ref, fast):
        with pytest.raises(ValueError, match="do not fit"):
            mod.store_kv(np.zeros((2, 4, 8), np.float32), 3, np.zeros((2, 2, 8), np.float32))
        with pytest.raises(ValueError, match="C-contiguous float32 or float16"):
            mod.store_kv(np.zeros((2, 4, 8), np.float64), 0, np.zeros((1, 2, 8), np.float32))
        with pytest.raises(ValueError, match="do not fit"):
            mod.store_kv(np.zeros((2, 4, 8), np.float32), 0, np.zeros((1, 3, 8), np.float32))


# ---- against torch (skipped where torch is absent; CI installs it) -----------------------
#
# The hf profile's block is torch's CPU float32 order: each function below is compared bit for
# bit with the torch expression transformers runs, on one torch thread.  The lane width follows
# torch's CPU capability (AVX-512: 16, AVX2: 8); run with ATEN_CPU_CAPABILITY=avx2 to check the
# other.

def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


def test_torch_lanes_follow_torchs_capability():
    torch = _torch()
    cap = torch.backends.cpu.get_cpu_capability()
    assert layers.torch_lanes() == (16 if cap.startswith("AVX512") else 8), cap


@pytest.mark.parametrize("n", [1, 3, 7, 8, 15, 16, 44, 64, 100, 160, 1000, 2560, 6912, 70000])
def test_torch_sum_and_rms_norm_equal_torch(n):
    """x.sum(-1) and transformers' RMSNorm (x * rsqrt(x.pow(2).mean(-1) + eps), times the
    weight) in torch: 0 differing bits, both backends."""
    torch = _torch()
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((6, n)) * np.exp(rng.uniform(-3, 3, (6, 1)))).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    xt = torch.from_numpy(x)
    assert_same_bytes(layers.torch_sum(x), xt.sum(-1).numpy(), "sum")
    want = (torch.from_numpy(w) * (xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + 1e-6))).numpy()
    ref, fast = twin_pair("layers")
    for mod in (ref, fast):
        assert_same_bytes(mod.rms_norm(x, w, 1e-6), want, mod.__name__)


@pytest.mark.parametrize("shape", [(64, 112), (3, 37), (80, 160), (1, 5)])
def test_ffn_act_equals_torch(shape):
    """F.silu(g) * u (Sleef's exp in torch's vector runs, libm's expf in its tail) and
    relu(g)^2 * u: 0 differing bits, both backends."""
    torch = _torch()
    rng = np.random.default_rng(shape[1])
    g = (rng.standard_normal(shape) * 4).astype(np.float32)
    u = rng.standard_normal(shape).astype(np.float32)
    gt, ut = torch.from_numpy(g), torch.from_numpy(u)
    want = {"silu": (torch.nn.functional.silu(gt) * ut).numpy(),
            "relu2": (torch.square(torch.relu(gt)) * ut).numpy()}
    ref, fast = twin_pair("layers")
    for mod in (ref, fast):
        for act in want:
            assert_same_bytes(mod.ffn_act(g, u, act), want[act], f"{mod.__name__} {act}")


@pytest.mark.parametrize("T, start, H, G, D", [(64, 0, 4, 1, 36), (70, 0, 4, 2, 16), (96, 0, 2, 2, 22),
                                               (20, 0, 8, 2, 64), (128, 0, 4, 2, 128),
                                               (260, 0, 2, 1, 256), (400, 0, 2, 2, 16)])
def test_attention_equals_torch_eager(T, start, H, G, D):
    """transformers' eager attention run by torch: matmul(q, k^T) * scale + causal mask,
    softmax in float32, matmul(p, v): 0 differing bits, both backends, including the sums
    MKL cuts into blocks (D = 256: two of 128; 260 keys: two of 130; 400: 192, 192, 16).
    (Products this size go to MKL's sgemm.  Tiny ones do not: torch's own loop below
    400 multiply-adds per head, and MKL's small-matrix kernels, e.g. 5 queries of 16 values,
    sum in other orders -- layers.attention's docstring.)"""
    torch = _torch()
    rng = np.random.default_rng(T + D)
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    k = rng.standard_normal((G, T, D)).astype(np.float32)
    v = rng.standard_normal((G, T, D)).astype(np.float32)
    qt = torch.from_numpy(q).permute(1, 0, 2)[None]
    kt = torch.from_numpy(k)[None].repeat_interleave(H // G, 1)
    vt = torch.from_numpy(v)[None].repeat_interleave(H // G, 1)
    mask = torch.triu(torch.full((T, T), torch.finfo(torch.float32).min), 1)
    w = torch.softmax(torch.matmul(qt, kt.transpose(2, 3)) * (D ** -0.5) + mask, -1,
                      dtype=torch.float32)
    want = torch.matmul(w, vt).transpose(1, 2).reshape(T, H * D).numpy()
    ref, fast = twin_pair("layers")
    for mod in (ref, fast):
        assert_same_bytes(mod.attention(q, k, v, start), want, mod.__name__)
