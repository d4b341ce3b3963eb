"""The engine profiles' block arithmetic (minibit/model/ggml.py): the C twin equal to the
NumPy reference bit for bit, each rule equal to the compiled ggml function it copies, and
whole models equal to the running engines (tools/peers) bit for bit."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minibit
from minibit import _backend, kernels, formats
from minibit.model import ggml as G
from conftest import assert_same_bytes, each_simd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools", "peers"))


def fast():
    f = _backend.fast_module("ggml")
    if f is None:
        pytest.skip("the Cython twins are not built")
    return f


def arr(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale * np.exp(rng.standard_normal(shape[:-1] + (1,)))
            ).astype(np.float32)


# ---- hand checks ------------------------------------------------------------------------

def test_fmaf_is_one_rounding():
    # 1 + 2^-24 is a tie in float32 when rounded alone; with the product's tail it is not
    a, b, c = np.float32(1 + 2.0 ** -12), np.float32(1 + 2.0 ** -12), np.float32(-1)
    exact = (1 + 2.0 ** -12) ** 2 - 1                               # 2^-11 + 2^-24
    assert G.fmaf(a, b, c) == np.float32(exact)
    assert np.float32(a * b) + c != np.float32(exact)               # two roundings differ


def test_v_expf_specials():
    x = np.array([0, -np.inf, -200, -100, -87, 1, 88, 100, 200], np.float32)
    y = G.v_expf(x)
    assert y[0] == 1 and y[1] == 0 and y[2] == 0
    assert y[5] == np.float32(np.e) or abs(y[5] / np.e - 1) < 2e-7
    assert np.isinf(y[-1])
    ref = np.exp(x.astype(np.float64))
    fin = np.isfinite(ref) & (ref > 1e-38) & (ref < 3e38)
    assert np.all(np.abs(y[fin] / ref[fin] - 1) < 3e-7)


# ---- twin == reference ------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 300), st.integers(0, 2 ** 32 - 1))
def test_twin_rows(T, n, seed):
    f = fast()
    rng = np.random.default_rng(seed)
    x, w = arr(rng, (T, n), 4), arr(rng, (n,))
    if n > 1:
        x[0, 0] = -np.inf / 30 if T > 1 else x[0, 0]
    x30 = x * 30
    xf = x.copy()
    xf[~np.isfinite(xf)] = 0
    y = arr(rng, (T, n))
    want = {"rms": G.rms_norm(xf, w, 1e-5), "silu": G.silu(xf), "exp": G.v_expf(x30),
            "f16": G.vec_dot_f16(G.f16(xf), G.f16(y)), "f32": G.vec_dot_f32(xf, y),
            "tb": G.tinyblas(xf, y) if n % 8 == 0 else None}

    def check(simd):
        assert_same_bytes(f.rms_norm(xf, w, 1e-5), want["rms"], f"rms_norm {simd}")
        assert_same_bytes(f.silu(xf), want["silu"], f"silu {simd}")
        assert_same_bytes(f.v_expf(x30), want["exp"], f"v_expf {simd}")
        assert_same_bytes(f.vec_dot_f16(G.f16(xf), G.f16(y)), want["f16"], f"f16 {simd}")
        assert_same_bytes(f.vec_dot_f32(xf, y), want["f32"], f"f32 {simd}")
        if n % 8 == 0:
            assert_same_bytes(f.tinyblas(xf, y), want["tb"], f"tinyblas {simd}")

    each_simd(f, check)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(0, 5000), st.sampled_from([8, 64, 80, 128]),
       st.sampled_from([10000.0, 500000.0]), st.integers(0, 2 ** 32 - 1))
def test_twin_rope(T, p0, D, base, seed):
    f = fast()
    rng = np.random.default_rng(seed)
    pos = np.arange(p0, p0 + T)
    c, s = G.rope_tables(pos, D, base)
    c2, s2 = f.rope_tables(pos, D, base)
    assert_same_bytes(c2, c, "cos")
    assert_same_bytes(s2, s, "sin")
    x = arr(rng, (T, 3, D))
    want = G.rope_neox(x, c, s)
    each_simd(f, lambda simd: assert_same_bytes(f.rope_neox(x, c, s), want, f"rope {simd}"))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(0, 40), st.sampled_from([(1, 1), (2, 1), (4, 2), (2, 2)]),
       st.sampled_from([8, 16, 40, 64]), st.sampled_from(["f16", "f32"]),
       st.sampled_from(["bitnet.cpp", "llama.cpp"]), st.booleans(), st.integers(1, 2),
       st.sampled_from([None, False, True]), st.integers(0, 2 ** 32 - 1))
def test_twin_attention(T, start, heads, D, kv, engine, interleaved, threads, flash, seed):
    f = fast()
    rng = np.random.default_rng(seed)
    H, Gk = heads
    S = start + T
    if engine == "bitnet.cpp" and flash:
        flash = False                                   # the fork's flash kernel is not copied
    cache = minibit.model.layers.KVCache(1, S + 7, Gk, D, kv)       # a slice of a longer cache
    minibit.model.layers.store_kv(cache.k[0], 0, arr(rng, (S, Gk, D), 2))
    minibit.model.layers.store_kv(cache.v[0], 0, arr(rng, (S, Gk, D)))
    q = arr(rng, (T, H, D), 2)
    k, v = cache.k[0, :, :S], cache.v[0, :, :S]
    want = G.attention(q, k, v, start, engine, interleaved, flash)
    old = kernels.get_threads()
    kernels.set_threads(threads)
    try:
        each_simd(f, lambda simd: assert_same_bytes(
            f.attention(q, k, v, start, engine, interleaved, flash), want, f"attention {simd}"))
    finally:
        kernels.set_threads(old)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 2, 3, 63, 64, 65, 70, 136]), st.sampled_from([0, 1, 30, 63, 64, 100]),
       st.sampled_from([(1, 1), (2, 1), (4, 2)]), st.sampled_from([8, 20, 24, 36, 40, 64]),
       st.sampled_from(["f16", "f32"]), st.booleans(), st.integers(1, 2),
       st.floats(0.5, 8), st.integers(0, 2 ** 32 - 1))
def test_twin_flash_attn(T, start, heads, D, kv, interleaved, threads, spread, seed):
    """llama.cpp's flash attention, both kernels (rows below 64 query rows, tiles from 64),
    across tile boundaries and with scores spread wide (new maxima late in a row, values
    that underflow), equal to the reference; an F32 cache equals an F16 one."""
    f = fast()
    rng = np.random.default_rng(seed)
    H, Gk = heads
    S = start + T
    cache = minibit.model.layers.KVCache(1, S + 3, Gk, D, kv)
    minibit.model.layers.store_kv(cache.k[0], 0, arr(rng, (S, Gk, D), spread))
    minibit.model.layers.store_kv(cache.v[0], 0, arr(rng, (S, Gk, D)))
    q = arr(rng, (T, H, D), spread)
    k, v = cache.k[0, :, :S], cache.v[0, :, :S]
    want = G.flash_attn(q, k, v, start, interleaved)
    assert np.isfinite(want).all()
    if kv == "f32":
        assert_same_bytes(G.flash_attn(q, G.f16(k).astype(np.float16), G.f16(v).astype(np.float16),
                                       start, interleaved), want, "f32 cache as f16")
    old = kernels.get_threads()
    kernels.set_threads(threads)
    try:
        each_simd(f, lambda simd: assert_same_bytes(
            f.flash_attn(q, k, v, start, interleaved), want, f"flash_attn {simd}"))
    finally:
        kernels.set_threads(old)


def test_flash_attn_by_hand():
    """One row worked by hand: the first position sets M and gives weight 1; a later, larger
    score rescales the F16 accumulator by libm's expf(M - s); the output is acc / S."""
    q = np.zeros((1, 1, 16), np.float32)
    q[0, 0, 0] = 1
    k = np.zeros((1, 2, 16), np.float16)
    k[0, :, 0] = [0, 4]                               # scores 0 and 1 after 1/sqrt(16)
    v = np.zeros((1, 2, 16), np.float16)
    v[0, 0, :], v[0, 1, :] = 1, 3
    out = G.flash_attn(q, k, v, 1)
    e = np.float32(G._expf(np.float32(-1)))
    acc = G.f16(np.float32(G.f16(np.float32(1) * e)) + np.float32(3))  # rescale, then + 3 * 1
    S = G.fmaf(np.float32(1), e, np.float32(1))
    assert s_eq(out[0, 0], acc * (np.float32(1) / S))
    assert abs(out[0, 0] - (np.exp(-1) + 3) / (np.exp(-1) + 1)) < 2e-3


def s_eq(a, b):
    return np.float32(a).tobytes() == np.float32(b).tobytes()


def test_flash_default_is_the_engines():
    q = arr(np.random.default_rng(0), (3, 2, 16))
    k = arr(np.random.default_rng(1), (1, 3, 16)).astype(np.float16)
    v = arr(np.random.default_rng(2), (1, 3, 16)).astype(np.float16)
    assert_same_bytes(G.attention(q, k, v, 0, "llama.cpp"), G.flash_attn(q, k, v, 0), "llama.cpp")
    assert_same_bytes(G.attention(q, k, v, 0, "bitnet.cpp"),
                      G.attention(q, k, v, 0, "bitnet.cpp", False, False), "bitnet.cpp")
    assert G.attention(q, k, v, 0, "llama.cpp").tobytes() != \
        G.attention(q, k, v, 0, "llama.cpp", False, False).tobytes()
    with pytest.raises(ValueError, match="bitnet.cpp's flash attention is not copied"):
        G.attention(q, k, v, 0, "bitnet.cpp", False, True)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.sampled_from([8, 40, 64, 72, 100]), st.integers(1, 50),
       st.sampled_from(["F16", "F32"]), st.sampled_from(["bitnet.cpp", "llama.cpp"]),
       st.integers(1, 2), st.integers(0, 2 ** 32 - 1))
def test_twin_lm_head(T, K, N, dtype, engine, threads, seed):
    f = fast()
    rng = np.random.default_rng(seed)
    h = arr(rng, (T, K))
    W = arr(rng, (N, K), 0.1).astype(np.float16 if dtype == "F16" else np.float32)
    want = G.lm_head(h, W, dtype, engine)
    old = kernels.get_threads()
    kernels.set_threads(threads)
    try:
        each_simd(f, lambda simd: assert_same_bytes(f.lm_head(h, W, dtype, engine), want,
                                                    f"lm_head {simd}"))
    finally:
        kernels.set_threads(old)


def test_twins_have_the_reference_signatures():
    import inspect
    f = fast()
    def params(fn):                          # names and defaults (the reference annotates)
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    for fn in G.TWINNED + ("v_expf", "vec_dot_f16", "vec_dot_f32", "tinyblas", "rope_tables"):
        assert params(getattr(f, fn)) == params(getattr(G, fn)), fn


# ---- each rule against the compiled ggml function ----------------------------------------

@pytest.fixture(scope="module")
def ggml_ops(tmp_path_factory):
    """tests/ggml_ops/ggml_ops.c linked against bitnet.cpp 2024's libggml (AVX2 build)."""
    import peers
    try:
        p = peers.get("bitnet.cpp", build=os.environ.get("MINIBIT_PEERS_BUILD") == "1",
                      log=lambda *a: None)
    except peers.PeerUnavailable as e:
        if os.environ.get("MINIBIT_PEERS_REQUIRED") == "1":
            raise
        pytest.skip(f"bitnet.cpp is not built: {e}")
    exe = str(tmp_path_factory.mktemp("ggml_ops") / "ggml_ops")
    cc = os.environ.get("CC", "cc")
    cmd = [cc, "-O1", os.path.join(HERE, "ggml_ops", "ggml_ops.c"), "-o", exe]
    cmd += [f"-I{d}" for d in p.include] + [f"-L{d}" for d in p.libdirs]
    cmd += [f"-Wl,-rpath,{d}" for d in p.libdirs] + ["-lggml"]
    subprocess.run(cmd, check=True, capture_output=True)
    return exe


def _run(exe, tmp, *args):
    subprocess.run([exe, *map(str, args)], check=True, cwd=tmp)
    return np.fromfile(os.path.join(tmp, "o.f32"), np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_rules_equal_ggml(ggml_ops, tmp_path, seed):
    rng = np.random.default_rng(seed)
    t = str(tmp_path)
    T, n = 5, 1536
    x = arr(rng, (T, n), 3)
    x.tofile(os.path.join(t, "x.f32"))
    assert_same_bytes(G.rms_norm(x, np.ones(n, np.float32), 1e-5),
                      _run(ggml_ops, t, "rms", 1, T, n, 1e-5, "x.f32", "o.f32").reshape(T, n), "rms")
    T, H, D = 7, 4, 64
    x = arr(rng, (T, H, D))
    x.tofile(os.path.join(t, "x.f32"))
    pos = np.arange(100, 100 + T, dtype=np.int32)
    pos.tofile(os.path.join(t, "p.i32"))
    c, s = G.rope_tables(pos, D, 10000.0)
    assert_same_bytes(G.rope_neox(x, c, s), _run(ggml_ops, t, "rope", 1, T, H, D, 10000.0, "x.f32",
                                                  "p.i32", "o.f32").reshape(T, H, D), "rope")
    T, S = 6, 64
    x = arr(rng, (T, S), 20)
    x.tofile(os.path.join(t, "x.f32"))
    allowed = np.arange(S)[None, :] <= (30 + np.arange(T))[:, None]
    np.where(allowed, 0, -np.inf).astype(np.float32).tofile(os.path.join(t, "m.f32"))
    assert_same_bytes(G.softmax(x, allowed, np.float32(0.125)),
                      _run(ggml_ops, t, "softmax", 1, T, S, 0.125, "x.f32", "m.f32", "o.f32"
                           ).reshape(T, S), "softmax")
    T, n = 3, 1005                                      # a tail after the groups of 8
    x = arr(rng, (T, n), 4)
    x.tofile(os.path.join(t, "x.f32"))
    assert_same_bytes(G.silu(x), _run(ggml_ops, t, "silu", 1, T, n, "x.f32", "o.f32").reshape(T, n),
                      "silu")
    m, k = 40, 200                                      # a tail after the steps of 32
    for rows in (1, 3):
        b = arr(rng, (rows, k))
        b.tofile(os.path.join(t, "b.f32"))
        for dtype, npt in (("f16", np.float16), ("f32", np.float32)):
            a = arr(rng, (m, k)).astype(npt)
            a.tofile(os.path.join(t, "a.bin"))
            got = _run(ggml_ops, t, "mulmat", 1, dtype, m, rows, k, "a.bin", "b.f32", "o.f32", "-")
            assert_same_bytes(G.lm_head(b, a, dtype.upper(), "bitnet.cpp"), got.reshape(rows, m),
                              f"mulmat {dtype} rows={rows}")


@pytest.mark.parametrize("fmt", ["i2_s", "tq2_0", "tq1_0"])
def test_linear_equals_ggml(ggml_ops, tmp_path, fmt):
    """The integer part and its float order, against the 2024 fork's own mul_mat (its I2_S
    kernel and the TQ x Q8_K AVX2 kernels), every kernel and backend."""
    rng = np.random.default_rng(3)
    t = str(tmp_path)
    m, k = 48, 768
    p = formats.encode(fmt, (rng.standard_normal((m, k)) * 0.02).astype(np.float32))
    np.asarray(p.data).tofile(os.path.join(t, "a.bin"))
    for rows in (1, 5):
        x = arr(rng, (rows, k))
        x.tofile(os.path.join(t, "b.f32"))
        eng = _run(ggml_ops, t, "mulmat", 1, fmt, m, rows, k, "a.bin", "b.f32", "o.f32", "-")
        for kern in kernels.available(fmt):
            for be in ("numpy", "cython") if _backend.fast_module("quant") else ("numpy",):
                with _backend.use(be):
                    y = kernels.linear(x, p, "bitnet.cpp", kern)
                assert_same_bytes(y, eng.reshape(rows, m), f"{fmt} {kern} {be} rows={rows}")


# ---- whole models against the running engines ---------------------------------------------

@pytest.fixture(scope="module")
def engine_models(tmp_path_factory):
    """The bundled demo's weights as arch "bitnet" (SiLU, sub-norms) and "llama" (no
    sub-norms), written as I2_S, TQ2_0 and TQ1_0 GGUF files."""
    root = tmp_path_factory.mktemp("engine_models")
    out = {}
    for arch in ("bitnet", "llama"):
        m = minibit.load("demo")
        m.config = m.transformer.config = dataclasses.replace(
            m.config, arch=arch, hidden_act="silu", sub_norms=arch == "bitnet", rope_theta=10000.0)
        if arch == "llama":
            for L in m.transformer.layers:
                L.attn_sub_norm = L.ffn_sub_norm = None
        for fmt in ("i2_s", "tq2_0", "tq1_0"):
            out[arch, fmt] = minibit.save_gguf(m, str(root / f"{arch}.{fmt}.gguf"),
                                               weight_format=fmt, progress=False)
    return out


def _peer(name):
    import peers
    try:
        return peers.get(name, build=os.environ.get("MINIBIT_PEERS_BUILD") == "1",
                         log=lambda *a: None)
    except peers.PeerUnavailable as e:
        if os.environ.get("MINIBIT_PEERS_REQUIRED") == "1":
            raise
        pytest.skip(f"{name} is not built: {e}")


ENGINE_CASES = [
    ("bitnet.cpp", "bitnet", "i2_s", "f16", "off"), ("bitnet.cpp", "bitnet", "tq2_0", "f16", "off"),
    ("bitnet.cpp", "bitnet", "tq1_0", "f16", "off"), ("bitnet.cpp", "llama", "i2_s", "f16", "off"),
    ("bitnet.cpp", "llama", "tq2_0", "f16", "off"),
    ("llama.cpp", "bitnet", "tq2_0", "f16", "off"), ("llama.cpp", "bitnet", "tq1_0", "f16", "off"),
    ("llama.cpp", "bitnet", "tq2_0", "f32", "off"), ("llama.cpp", "llama", "tq2_0", "f16", "off"),
    ("llama.cpp", "llama", "tq1_0", "f32", "off"),
    ("llama.cpp", "bitnet", "tq2_0", "f16", "on"), ("llama.cpp", "bitnet", "tq1_0", "f32", "on"),
    ("llama.cpp", "llama", "tq2_0", "f32", "on"), ("llama.cpp", "llama", "tq1_0", "f16", "on"),
]


@pytest.mark.parametrize("engine,arch,fmt,kv,flash", ENGINE_CASES)
def test_engine_logits_bit_for_bit(engine_models, engine, arch, fmt, kv, flash):
    """The matching profile's logits equal the engine's at every position, bit for bit, as
    one batch and token by token (1 engine thread; flash attention off, or on as llama.cpp
    runs by default: 80 tokens, so the batch takes the tiled kernel)."""
    import peers
    p = _peer(engine)
    path = engine_models[arch, fmt]
    ids = [int(t) for t in np.random.default_rng(1).integers(3, 4000, 80 if flash == "on" else 40)]
    m = minibit.load(path, profile=engine)
    m.kv_cache = kv
    m.flash_attn = flash == "on"
    for mode in ("batch", "seq"):
        eng = peers.evaluate(p, path, ids, mode=mode, threads=1, kv=kv, flash_attn=flash)["logits"]
        if mode == "batch":
            mine = m.logits(ids)
        else:
            cache = m.new_cache(len(ids))
            mine = np.concatenate([m.forward([t], cache) for t in ids])
        assert_same_bytes(mine, eng, f"{engine} {arch} {fmt} kv={kv} {mode}")


@pytest.mark.parametrize("fmt,K,wrap", [("i2_s", 768, False), ("i2_s", 8192, True),
                                        ("tq2_0", 768, False), ("tq1_0", 768, False)])
def test_integer_accumulators_equal_ggml(ggml_ops, tmp_path, fmt, K, wrap):
    """The engine's integer sums, read through inputs that make every float step exact:
    integer activations whose scale is exactly 1 (I2_S: max|x| = 127; Q8_K: each block's
    signed extreme is -127) and weight scales of 1, so the engine's output IS its integer
    accumulator.  It equals minibit's integer part exactly: I2_S's R' - sum(q) through the
    AVX2 kernel's int16 lanes (wrap=True: every code +1 and q = 127, so lanes wrap past
    32767 and both sides wrap alike), TQ's block sums."""
    from minibit.kernels import mad, tq
    rng = np.random.default_rng(5)
    t = str(tmp_path)
    m = 24
    codes = (np.ones((m, K), np.int8) if wrap
             else rng.integers(-1, 2, (m, K)).astype(np.int8))
    p = formats.pack_codes(fmt, codes, np.float32(1))
    np.asarray(p.data).tofile(os.path.join(t, "a.bin"))
    rows = 3
    x = (np.full((rows, K), 127.0, np.float32) if wrap
         else rng.integers(-126, 127, (rows, K)).astype(np.float32))
    if fmt == "i2_s":
        x[:, 5] = 127.0                                   # s = 127 / 127 = 1 exactly
    else:
        x[:, ::256] = -127.0                              # iscale = -127 / -127 = 1, d = 1
    x.tofile(os.path.join(t, "b.f32"))
    eng = _run(ggml_ops, t, "mulmat", 1, fmt, m, rows, K, "a.bin", "b.f32", "o.f32", "-"
               ).reshape(rows, m)
    q = x.astype(np.int8)
    if fmt == "i2_s":
        acc = (mad.lane_product(p.data, m, K, "i2_s", q).astype(np.int64)
               - q.astype(np.int64).sum(axis=1)[:, None])
        exact = q.astype(np.int64) @ codes.astype(np.int64).T
        assert (acc != exact).any() == wrap               # the wrap case does wrap
    else:
        acc = tq.block_sums(p.data, m, K, fmt, q).astype(np.int64).sum(axis=2)
        assert np.array_equal(acc, q.astype(np.int64) @ codes.astype(np.int64).T)
    assert np.all(np.abs(acc) < 2 ** 24)                  # every value exact in float32
    assert np.array_equal(eng.astype(np.int64), acc) and np.all(eng == np.round(eng))


def test_silu_and_expf_lanes_at_the_edges():
    """The twin's eight-lane ggml_v_expf (SiLU, softmax) against the one-lane reference at
    the values where its branches and signs matter: +-0, the 126 and 192 thresholds, huge
    and tiny inputs, in every lane position."""
    f = fast()
    edges = np.array([0.0, -0.0, 88.7, 88.8, -87.3, -103, -150, -200, 126.5, -126.5, 130, -130,
                      192.5, -192.5, -1e4, 1e4, 87.0, -88.0, 1e-30, -1e-30, 50, -50, 3, -3],
                     np.float32)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = np.concatenate([edges, (rng.standard_normal(40) * 100).astype(np.float32)])
        rng.shuffle(x)
        x = x.reshape(2, -1)
        each_simd(f, lambda simd: assert_same_bytes(f.silu(x), G.silu(x), f"silu {simd}"))
