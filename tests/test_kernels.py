"""Ternary mpGEMM: every kernel, both backends, the same bits; integer parts exact; the int16
lanes of bitnet.cpp's AVX2 kernel wrap where (and only where) they should.

Speed is measured by ``minibit bench kernels`` (minibit/kernels/bench.py), never here.
"""

import zlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minibit
from minibit import _backend, formats, kernels, quant
from minibit.kernels import mad, tq, v0
from conftest import assert_same_bytes, twin_pair

FMTS_MAD = ("i2_s", "hf_packed")
FMTS_TQ = ("tq2_0", "tq1_0")


# ---- helpers --------------------------------------------------------------------------------

def simd_modes(fast):
    """The compiled twin's code paths on this CPU: portable C, AVX2 (when present), AVX2 with
    the AVX-VNNI kernels ("avxvnni") and with the AVX-512 VNNI kernels ("vnni"), each when
    present."""
    modes = [False]
    old, old_v = fast._set_simd(True), fast._set_vnni(True)
    try:
        if fast._simd() == "avx2":
            modes.append(True)
            fast._set_vnni("avxvnni")
            if fast._vnni() == "avxvnni":
                modes.append("avxvnni")
            fast._set_vnni(True)
            if fast._vnni() == "avx512vnni":
                modes.append("vnni")
    finally:
        fast._set_simd(old)
        fast._set_vnni(old_v)
    return modes


def run_twin(fast, simd, fn, *args):
    """fast.fn(*args) on one path of simd_modes: False, True (AVX2 only), "avxvnni" or "vnni"."""
    vnni = {"vnni": True, "avxvnni": "avxvnni"}.get(simd, False) if isinstance(simd, str) else False
    old, old_v = fast._set_simd(bool(simd)), fast._set_vnni(vnni)
    try:
        return getattr(fast, fn)(*args)
    finally:
        fast._set_simd(old)
        fast._set_vnni(old_v)


def backends():
    out = ["numpy"]
    if _backend.fast_module("quant") is not None:
        out.append("cython")
    return out


def codes_strategy(rows, cols):
    """Ternary codes: uniform, all one value, or mostly zero (sparse rows)."""
    kind = st.sampled_from(["uniform", "plus", "minus", "sparse"])

    def make(args):
        k, seed = args
        rng = np.random.default_rng(seed)
        if k == "plus":
            return np.ones((rows, cols), np.int8)
        if k == "minus":
            return -np.ones((rows, cols), np.int8)
        c = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
        if k == "sparse":
            c[rng.random((rows, cols)) < 0.9] = 0
        return c
    return st.tuples(kind, st.integers(0, 2 ** 32 - 1)).map(make)


def int8_acts(T, cols):
    """int8 activations: uniform, saturated at -128 / 127, or one sign (wrap hunting)."""
    kind = st.sampled_from(["uniform", "neg", "pos", "extreme", "zero"])

    def make(args):
        k, seed = args
        rng = np.random.default_rng(seed)
        if k == "neg":
            return rng.integers(-128, -100, (T, cols)).astype(np.int8)
        if k == "pos":
            return rng.integers(100, 128, (T, cols)).astype(np.int8)
        if k == "extreme":
            return rng.choice(np.array([-128, 127, -127, 0], np.int8), (T, cols))
        if k == "zero":
            return np.zeros((T, cols), np.int8)
        return rng.integers(-128, 128, (T, cols)).astype(np.int8)
    return st.tuples(kind, st.integers(0, 2 ** 32 - 1)).map(make)


@st.composite
def mad_case(draw, max_blocks=3, long_rows=False):
    rows = draw(st.integers(1, 21))
    blocks = draw(st.integers(1, max_blocks))
    cols = 128 * blocks + (4096 * draw(st.integers(1, 2)) if long_rows else 0)
    T = draw(st.integers(1, 5))
    codes = draw(codes_strategy(rows, cols))
    q = draw(int8_acts(T, cols))
    return codes, q


# ---- registry and arguments -------------------------------------------------------------------

def test_available_and_profiles():
    assert kernels.available("i2_s")[:2] == ["v0", "mad"]
    assert kernels.available("hf_packed")[:2] == ["v0", "mad"]
    assert kernels.available("tq2_0") == ["v0", "tq"] and kernels.available("tq1_0") == ["v0", "tq"]
    assert kernels.available("tl1")[0] == "v0" and "mad" not in kernels.available("tl2")
    assert kernels.natural_profile("hf_packed") == "hf"
    assert kernels.natural_profile("i2_s") == "bitnet.cpp"
    assert kernels.natural_profile("tq1_0") == "llama.cpp"
    with pytest.raises(minibit.FormatError, match="unknown weight format"):
        kernels.available("q4_0")


def test_unsupported_pairs_say_which_exist():
    p = formats.encode("tq2_0", np.ones((2, 256), np.float32))
    x = np.ones((1, 256), np.float32)
    with pytest.raises(minibit.FormatError, match=r"not supported on format 'tq2_0'.*i2_s: "):
        kernels.linear(x, p, profile="hf")
    with pytest.raises(minibit.FormatError, match="does not run on format"):
        kernels.linear(x, p, kernel="mad")
    with pytest.raises(minibit.FormatError):
        kernels.linear(x, p, profile="bitnet")
    with pytest.raises(minibit.FormatError):
        kernels.linear(x, p.data)                                      # not a Packed


def test_rejected_shapes_and_arrays():
    F = minibit.FormatError
    codes = np.ones((4, 256), np.int8)
    q = np.ones((1, 256), np.int8)
    p = formats.pack_codes("i2_s", codes, 1.0)
    impls = [mad] + ([twin_pair("mad")[1]] if _backend.fast_module("mad") else [])
    for m in impls:
        with pytest.raises(F):
            m.integer_product(p.data[:-1], 4, 256, "i2_s", q)          # one byte short
        with pytest.raises(F):
            m.integer_product(p.data, 4, 256, "i2_s", q.astype(np.int16))
        with pytest.raises(F):
            m.integer_product(p.data, 4, 256, "i2_s", q[:, :128])      # wrong K
        with pytest.raises(F):
            m.integer_product(p.data, 4, 200, "i2_s", q[:, :200])      # K % 128
        with pytest.raises(F):
            m.integer_product(p.data, 4, 256, "q2", q)
        with pytest.raises(F):
            m.integer_product(p.data.astype(np.int8), 4, 256, "i2_s", q)
        with pytest.raises(F):
            m.integer_product(p.data, 0, 256, "i2_s", q)
        h = formats.pack_codes("hf_packed", np.ones((5, 100), np.int8), 1.0)
        with pytest.raises(F):                                         # bitnet.cpp needs K % 128
            m.lane_product(h.data, 5, 100, "hf_packed", np.ones((1, 100), np.int8))
        with pytest.raises(F):
            m.integer_product(h.data, 9, 100, "hf_packed", np.ones((1, 100), np.int8))
        with pytest.raises(F):
            m.linear_hf(p.data, 4, 256, "i2_s", q, np.ones(2, np.float32), 1.0)
        with pytest.raises(F):
            m.linear_i2s(p.data, 4, 256, "i2_s", q, np.ones(1, np.float32),
                         np.ones(1, np.int64), 1.0)
    t = formats.encode("tq1_0", np.ones((3, 512), np.float32))
    q8 = np.ones((2, 512), np.int8)
    impls = [tq] + ([twin_pair("tq")[1]] if _backend.fast_module("tq") else [])
    for m in impls:
        with pytest.raises(F):
            m.block_sums(t.data, 3, 512, "tq2_0", q8)                  # tq1_0 bytes as tq2_0
        with pytest.raises(F):
            m.block_sums(t.data[:, :-1], 3, 512, "tq1_0", q8)
        with pytest.raises(F):
            m.block_sums(t.data, 3, 500, "tq1_0", q8[:, :500])
        with pytest.raises(F):
            m.linear_q8k(t.data, 3, 512, "tq1_0", q8, np.ones((2, 1), np.float32))
        with pytest.raises(F):
            m.linear_q8k(t.data, 3, 512, "tq1_0", q8, np.ones((2, 2), np.float64))
    # the public entry: activations that do not fit the weight
    with pytest.raises(F):
        kernels.linear(np.ones((2, 255), np.float32), p)
    with pytest.raises(F):
        kernels.linear(np.ones((2, 2, 256), np.float32), p)
    with pytest.raises(F):
        kernels.linear(np.ones((2, 256), np.int32), p)
    with pytest.raises(F):
        kernels.linear(np.full((1, 256), np.nan, np.float32), p)
    h = formats.pack_codes("hf_packed", np.ones((5, 100), np.int8), 1.0)
    with pytest.raises(F, match="multiple of 128"):
        kernels.linear(np.ones((1, 100), np.float32), h, profile="bitnet.cpp")
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(F):
            kernels.set_threads(bad)


# ---- the integer parts are the plain int32 product -----------------------------------------

@given(mad_case())
def test_mad_integer_product_is_exact(case):
    codes, q = case
    rows, cols = codes.shape
    want = q.astype(np.int32) @ codes.astype(np.int32).T                    # [T, N] int32
    for fmt in FMTS_MAD:
        p = formats.pack_codes(fmt, codes, 1.0)
        data, _ = mad.packed_args(p, "bitnet.cpp")
        assert_same_bytes(mad.integer_product(data, rows, cols, fmt, q), want, f"{fmt} reference")
        assert_same_bytes(v0.integer_product(codes, q), want, "v0")
        if _backend.fast_module("mad") is not None:
            fast = _backend.fast_module("mad")
            for simd in simd_modes(fast):
                got = run_twin(fast, simd, "integer_product", data, rows, cols, fmt, q)
                assert_same_bytes(got, want, f"{fmt} twin simd={simd}")


@given(st.integers(1, 9), st.integers(1, 70), st.integers(1, 4), st.integers(0, 2 ** 32 - 1))
def test_mad_hf_packed_any_row_length(rows, cols, T, seed):
    """hf_packed runs the hf profile on any K (the twin has a scalar tail past 32-column chunks)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    q = rng.integers(-128, 128, (T, cols)).astype(np.int8)
    p = formats.pack_codes("hf_packed", codes, 1.0)
    want = q.astype(np.int32) @ codes.astype(np.int32).T
    assert_same_bytes(mad.integer_product(p.data, rows, cols, "hf_packed", q), want)
    if _backend.fast_module("mad") is not None:
        fast = _backend.fast_module("mad")
        for simd in simd_modes(fast):
            assert_same_bytes(run_twin(fast, simd, "integer_product", p.data, rows, cols,
                                       "hf_packed", q), want, f"twin simd={simd}")


def tq_weights(rng, rows, cols, zero_blocks=False):
    codes = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    d = np.exp(rng.standard_normal((rows, cols // 256))).astype(np.float32)   # per-block scale
    if zero_blocks:
        codes[:, :256] = 0
    return codes.astype(np.float32) * np.repeat(d, 256, axis=1)


@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 5), st.integers(0, 2 ** 32 - 1),
       st.booleans())
def test_tq_block_sums_are_exact(rows, nb, T, seed, zero_blocks):
    rng = np.random.default_rng(seed)
    cols = 256 * nb
    w = tq_weights(rng, rows, cols, zero_blocks)
    x = (rng.standard_normal((T, cols)) * np.exp(2 * rng.standard_normal((T, 1)))).astype(np.float32)
    if zero_blocks:
        x[:, 256:512] = 0
    q, d, _ = quant.quantize_q8_k(x)
    for fmt in FMTS_TQ:
        p = formats.encode(fmt, w)
        codes, _ = formats.unpack_codes(p)
        want = np.stack([q[:, 256 * b:256 * b + 256].astype(np.int32)
                         @ codes[:, 256 * b:256 * b + 256].astype(np.int32).T
                         for b in range(nb)], axis=2)                           # [T, N, nb] int32
        assert_same_bytes(tq.block_sums(p.data, rows, cols, fmt, q), want, f"{fmt} reference")
        assert_same_bytes(v0.block_sums(codes, q), want, f"{fmt} v0")
        if _backend.fast_module("tq") is not None:
            fast = _backend.fast_module("tq")
            for simd in simd_modes(fast):
                got = run_twin(fast, simd, "block_sums", p.data, rows, cols, fmt, q)
                assert_same_bytes(got, want, f"{fmt} twin simd={simd}")


# ---- twins: same bits as the references --------------------------------------------------

@given(mad_case(max_blocks=3), st.floats(0.0009765625, 1024.0, width=32))
def test_mad_twin_same_bits(case, scale):
    ref, fast = twin_pair("mad")
    codes, q = case
    rows, cols = codes.shape
    T = q.shape[0]
    rng = np.random.default_rng(int(q.sum()) & 0xFFFF)
    s = (np.float32(127) / rng.uniform(0.01, 50, T)).astype(np.float32)
    sums = q.sum(axis=1, dtype=np.int32)
    for fmt in FMTS_MAD:
        p = formats.pack_codes(fmt, codes, scale)
        data, sc = ref.packed_args(p, "bitnet.cpp")
        want = {"integer_product": ref.integer_product(data, rows, cols, fmt, q),
                "lane_product": ref.lane_product(data, rows, cols, fmt, q),
                "linear_hf": ref.linear_hf(data, rows, cols, fmt, q, s, sc),
                "linear_i2s": ref.linear_i2s(data, rows, cols, fmt, q, s, sums, sc)}
        for simd in simd_modes(fast):
            got = {"integer_product": run_twin(fast, simd, "integer_product", data, rows, cols, fmt, q),
                   "lane_product": run_twin(fast, simd, "lane_product", data, rows, cols, fmt, q),
                   "linear_hf": run_twin(fast, simd, "linear_hf", data, rows, cols, fmt, q, s, sc),
                   "linear_i2s": run_twin(fast, simd, "linear_i2s", data, rows, cols, fmt, q, s,
                                          sums, sc)}
            for k in want:
                assert_same_bytes(got[k], want[k], f"{fmt} {k} simd={simd}")


@given(mad_case(max_blocks=2, long_rows=True))
def test_mad_twin_same_bits_across_lane_groups(case):
    """Rows longer than one 32-block group (4096 columns), activations that may wrap."""
    ref, fast = twin_pair("mad")
    codes, q = case
    rows, cols = codes.shape
    for fmt in FMTS_MAD:
        p = formats.pack_codes(fmt, codes, 1.0)
        data, _ = ref.packed_args(p, "bitnet.cpp")
        want = ref.lane_product(data, rows, cols, fmt, q)
        assert_same_bytes(v0.lane_product(codes, q), want, f"{fmt} v0 lanes")
        for simd in simd_modes(fast):
            assert_same_bytes(run_twin(fast, simd, "lane_product", data, rows, cols, fmt, q),
                              want, f"{fmt} lanes simd={simd}")
            assert_same_bytes(run_twin(fast, simd, "integer_product", data, rows, cols, fmt, q),
                              q.astype(np.int32) @ codes.astype(np.int32).T, f"{fmt} exact")


@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 10), st.integers(0, 2 ** 32 - 1),
       st.booleans())
def test_tq_twin_same_bits(rows, nb, T, seed, zero_blocks):
    ref, fast = twin_pair("tq")
    rng = np.random.default_rng(seed)
    cols = 256 * nb
    w = tq_weights(rng, rows, cols, zero_blocks)
    x = (rng.standard_normal((T, cols)) * np.exp(3 * rng.standard_normal((T, cols)))).astype(np.float32)
    q, d, _ = quant.quantize_q8_k(x)
    for fmt in FMTS_TQ:
        p = formats.encode(fmt, w)
        want_s = ref.block_sums(p.data, rows, cols, fmt, q)
        want_y = ref.linear_q8k(p.data, rows, cols, fmt, q, d)
        want_l = ref.lane_sums(p.data, rows, cols, fmt, q)
        want_a = ref.linear_q8k_avx2(p.data, rows, cols, fmt, q, d)
        want_f = ref.linear_q8k_avx2(p.data, rows, cols, fmt, q, d, True)
        assert_same_bytes(want_l.sum(axis=3, dtype=np.int32), want_s, f"{fmt} lanes vs blocks")
        for simd in simd_modes(fast):
            assert_same_bytes(run_twin(fast, simd, "block_sums", p.data, rows, cols, fmt, q),
                              want_s, f"{fmt} block_sums simd={simd}")
            assert_same_bytes(run_twin(fast, simd, "linear_q8k", p.data, rows, cols, fmt, q, d),
                              want_y, f"{fmt} linear_q8k simd={simd}")
            assert_same_bytes(run_twin(fast, simd, "lane_sums", p.data, rows, cols, fmt, q),
                              want_l, f"{fmt} lane_sums simd={simd}")
            assert_same_bytes(run_twin(fast, simd, "linear_q8k_avx2", p.data, rows, cols, fmt, q, d),
                              want_a, f"{fmt} linear_q8k_avx2 simd={simd}")
            assert_same_bytes(run_twin(fast, simd, "linear_q8k_avx2", p.data, rows, cols, fmt, q, d,
                                       True), want_f, f"{fmt} linear_q8k_avx2 fused simd={simd}")


@given(st.lists(st.integers(1, 40), min_size=1, max_size=4), st.integers(1, 3),
       st.integers(1, 9), st.integers(1, 2), st.integers(0, 2 ** 32 - 1))
def test_group_twins_same_bits_as_one_call_per_weight(rows, nb, T, threads, seed):
    """q/k/v or gate/up as one job (linear_q8k_avx2_group, linear_i2s_group): every output
    the bits of the weight's own call, on either path and thread count."""
    fast_tq, fast_mad = twin_pair("tq")[1], twin_pair("mad")[1]
    rng = np.random.default_rng(seed)
    cols = 256 * nb
    ws = [tq_weights(rng, r, cols) for r in rows]
    x = (rng.standard_normal((T, cols)) * np.exp(2 * rng.standard_normal((T, cols)))).astype(np.float32)
    q, d, _ = quant.quantize_q8_k(x)
    qi, si, sums = quant.quantize_act_i2s(x)
    ptq = [formats.encode("tq2_0", w) for w in ws]
    pi2 = [formats.encode("i2_s", w) for w in ws]
    i2 = [mad.packed_args(p, "bitnet.cpp") for p in pi2]
    old = kernels.get_threads()
    kernels.set_threads(threads)
    try:
        for simd in simd_modes(fast_tq):
            for fused in (False, True):
                got = run_twin(fast_tq, simd, "linear_q8k_avx2_group", [p.data for p in ptq], rows,
                               cols, "tq2_0", q, d, fused)
                assert isinstance(got, tuple) and len(got) == len(rows)
                for g, p, r in zip(got, ptq, rows):
                    assert_same_bytes(g, tq.linear_q8k_avx2(p.data, r, cols, "tq2_0", q, d, fused),
                                      f"tq group fused={fused} simd={simd}")
            got = run_twin(fast_mad, simd, "linear_i2s_group", [a[0] for a in i2], rows, cols,
                           "i2_s", qi, si, sums, [a[1] for a in i2])
            for g, a, r in zip(got, i2, rows):
                assert_same_bytes(g, mad.linear_i2s(a[0], r, cols, "i2_s", qi, si, sums, a[1]),
                                  f"i2_s group simd={simd}")
    finally:
        kernels.set_threads(old)


def test_group_twins_check_their_arguments():
    ref, fast = twin_pair("tq")
    p = formats.encode("tq2_0", tq_weights(np.random.default_rng(0), 4, 256))
    q, d, _ = quant.quantize_q8_k(np.ones((1, 256), np.float32))
    for impl in (ref, fast):
        with pytest.raises(minibit.FormatError):
            impl.linear_q8k_avx2_group([p.data], [4, 4], 256, "tq2_0", q, d)
        with pytest.raises(minibit.FormatError):
            impl.linear_q8k_avx2_group([], [], 256, "tq2_0", q, d)
        with pytest.raises(minibit.FormatError):                  # the second weight is too short
            impl.linear_q8k_avx2_group([p.data, p.data[:2]], [4, 4], 256, "tq2_0", q, d)


@given(st.integers(0, 2 ** 32 - 1))
def test_tq2_0_code_3_counts_as_two(seed):
    """Bytes no packer writes (code 3) are read the same way by reference and twin."""
    ref, fast = twin_pair("tq")
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (6, 66 * 2)).astype(np.uint8)      # 6 rows: the 4-row path too
    data[:, 64:66] = data[:, 130:132] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)
    q = rng.integers(-127, 128, (5, 512)).astype(np.int8)      # 5 tokens: the 4-token path too
    d = rng.uniform(0.001, 0.1, (5, 2)).astype(np.float32)
    for simd in simd_modes(fast):
        assert_same_bytes(run_twin(fast, simd, "block_sums", data, 6, 512, "tq2_0", q),
                          ref.block_sums(data, 6, 512, "tq2_0", q))
        assert_same_bytes(run_twin(fast, simd, "linear_q8k", data, 6, 512, "tq2_0", q, d),
                          ref.linear_q8k(data, 6, 512, "tq2_0", q, d))
        assert_same_bytes(run_twin(fast, simd, "linear_q8k_avx2", data, 6, 512, "tq2_0", q, d),
                          ref.linear_q8k_avx2(data, 6, 512, "tq2_0", q, d))


def vnni_twin(name, want=("vnni", "avxvnni")):
    """(the compiled twin, its VNNI modes among want), or a skip naming what this CPU lacks."""
    fast = twin_pair(name)[1]
    modes = [m for m in simd_modes(fast) if m in want]
    if not modes:
        pytest.skip("no VNNI here (AVX-512 VNNI needs avx512f, avx512bw, avx512vl, avx512vnni, "
                    "fma, f16c; AVX-VNNI needs avxvnni, fma, f16c): only the AVX2 path runs")
    return fast, modes


TQ_ACTS = ("uniform", "plus127", "minus127", "minus128", "pm127", "extreme")


def tq_acts(rng, kind, T, cols):
    if kind == "plus127":
        return np.full((T, cols), 127, np.int8)
    if kind == "minus127":
        return np.full((T, cols), -127, np.int8)
    if kind == "minus128":
        return np.full((T, cols), -128, np.int8)
    if kind == "pm127":
        return rng.choice(np.array([-127, 127], np.int8), (T, cols))
    if kind == "extreme":
        return rng.choice(np.array([-128, 127, -127, 0], np.int8), (T, cols))
    return rng.integers(-128, 128, (T, cols)).astype(np.int8)


@given(st.integers(1, 13), st.integers(1, 5), st.integers(1, 10), st.sampled_from(TQ_ACTS),
       st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_tq2_vnni_lanes_same_bits(rows, nb, T, acts, raw_bytes, seed):
    """The VNNI TQ2_0 kernels (vpdpbusd lanes, AVX-512 and AVX-VNNI: decode rows x 4, prefill
    tokens x 4) give the bytes of the AVX2 kernels, of portable C and of the NumPy reference,
    fused and apart, on random shapes (row and token counts off the tiles of four included)
    and on saturated activations: all 127, all -127, all -128, +-127."""
    fast, vmodes = vnni_twin("tq")
    rng = np.random.default_rng(seed)
    cols = 256 * nb
    if raw_bytes:           # any code byte, code 3 included; scales in a sane range
        data = rng.integers(0, 256, (rows, 66 * nb)).astype(np.uint8)
        half = rng.uniform(0.01, 2.0, (rows, nb)).astype(np.float16).view(np.uint8)
        data.reshape(rows, nb, 66)[:, :, 64:66] = half.reshape(rows, nb, 2)
    else:
        data = formats.encode("tq2_0", tq_weights(rng, rows, cols)).data
    q = tq_acts(rng, acts, T, cols)
    d = rng.uniform(0.0001, 0.1, (T, nb)).astype(np.float32)
    for fused in (False, True):
        want = tq.linear_q8k_avx2(data, rows, cols, "tq2_0", q, d, fused)
        for simd in vmodes + [True, False]:
            assert_same_bytes(run_twin(fast, simd, "linear_q8k_avx2", data, rows, cols, "tq2_0",
                                       q, d, fused), want, f"{acts} fused={fused} simd={simd}")


def test_vnni_switch_and_env(tmp_path):
    """_set_vnni turns the VNNI kernels off and on for every twin (or to the 256-bit ones
    only); MINIBIT_NO_VNNI=1 at import starts a process with them off.  (The child runs in
    an empty directory: from the source tree, minibit would be the uninstalled one.)"""
    import subprocess
    import sys
    fast = twin_pair("tq")[1]
    old = fast._set_vnni(False)
    try:
        assert fast._vnni() in ("off", "absent")
        assert twin_pair("mad")[1]._vnni() in ("off", "absent")      # one switch for all twins
        assert fast._set_vnni("avxvnni") is False
        assert fast._vnni() in ("avxvnni", "off", "absent")
        assert fast._set_vnni(True) == "avxvnni"
        have = fast._vnni()
        assert have in ("avx512vnni", "avxvnni", "absent")
        with pytest.raises(ValueError):
            fast._set_vnni("avx512")
    finally:
        fast._set_vnni(old)
    code = "from minibit._fast import tq; print(tq._vnni())"
    for env, want in (("1", "off"), ("0", have), ("", have)):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**__import__("os").environ, "MINIBIT_NO_VNNI": env},
                             cwd=str(tmp_path), check=True)
        assert out.stdout.strip() == (want if have != "absent" else "absent"), (env, out.stdout)


@given(st.integers(1, 9), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2 ** 32 - 1))
def test_mad_raw_bytes_code_3(rows, blocks, T, seed):
    """Any byte pattern (code 3 = w 2, which no packer writes) gives the same bits in both."""
    ref, fast = twin_pair("mad")
    rng = np.random.default_rng(seed)
    cols = 128 * blocks
    q = rng.integers(-128, 128, (T, cols)).astype(np.int8)
    layouts = {"i2_s": rng.integers(0, 256, rows * cols // 4 + 32).astype(np.uint8),
               "hf_packed": rng.integers(0, 256, (-(-rows // 4), cols)).astype(np.uint8)}
    for fmt, data in layouts.items():
        w = ref.code_matrix(data, rows, cols, fmt).astype(np.int32) - 1     # -1..2
        assert_same_bytes(ref.integer_product(data, rows, cols, fmt, q), q.astype(np.int32) @ w.T)
        for simd in simd_modes(fast):
            for fn in ("integer_product", "lane_product"):
                assert_same_bytes(run_twin(fast, simd, fn, data, rows, cols, fmt, q),
                                  getattr(ref, fn)(data, rows, cols, fmt, q), f"{fmt} {fn} {simd}")


@pytest.mark.parametrize("name", ["mad", "tq", "dense"])
def test_twins_have_the_reference_signatures(name):
    import inspect
    ref, fast = twin_pair(name)
    for fn in ref.TWINNED:
        assert inspect.signature(getattr(fast, fn)) == inspect.signature(getattr(ref, fn)), fn


# ---- the public entry: every kernel, both backends, one answer -------------------------------

def weight_for(fmt, rng, rows, cols):
    if fmt in FMTS_TQ:
        return formats.encode(fmt, tq_weights(rng, rows, cols))
    return formats.encode(fmt, rng.standard_normal((rows, cols)).astype(np.float32))


@pytest.mark.parametrize("fmt,shape", [("i2_s", (20, 384)), ("hf_packed", (21, 256)),
                                       ("hf_packed", (7, 200)), ("tq2_0", (9, 512)),
                                       ("tq1_0", (9, 768)), ("tl1", (64, 128)),
                                       ("tl2", (64, 192))])
def test_every_kernel_every_backend_same_bits(fmt, shape):
    rng = np.random.default_rng(zlib.crc32(f"{fmt}{shape}".encode()))
    rows, cols = shape
    p = weight_for(fmt, rng, rows, cols)
    x = (rng.standard_normal((5, cols)) * np.exp(rng.standard_normal((5, 1)))).astype(np.float32)
    x[1] = 0                                                                # an all-zero token
    for prof in kernels.profiles(fmt):
        if prof == "bitnet.cpp" and fmt == "hf_packed" and cols % 128:
            continue
        results = {}
        for be in backends():
            with _backend.use(be):
                for k in kernels.available(fmt):
                    results[(be, k)] = kernels.linear(x, p, profile=prof, kernel=k)
                results[(be, None)] = kernels.linear(x, p, profile=prof)
        first_key, first = next(iter(results.items()))
        assert first.dtype == np.float32 and first.shape == (5, rows)
        for key, y in results.items():
            assert_same_bytes(y, first, f"{fmt} {prof} {key} vs {first_key}")


def test_vector_input_and_strided_input():
    rng = np.random.default_rng(3)
    p = formats.encode("i2_s", rng.standard_normal((16, 256)).astype(np.float32))
    x = rng.standard_normal((4, 512)).astype(np.float32)[:, ::2]          # non-contiguous
    y = kernels.linear(x, p)
    assert_same_bytes(y, kernels.linear(np.ascontiguousarray(x), p))
    assert_same_bytes(kernels.linear(x[2], p), y[2])                         # [cols] -> [rows]
    assert kernels.linear(x[:0], p).shape == (0, 16)


def test_inputs_not_mutated():
    rng = np.random.default_rng(4)
    for fmt, shape in [("i2_s", (8, 256)), ("hf_packed", (9, 256)), ("tq2_0", (5, 512)),
                       ("tq1_0", (5, 256))]:
        p = weight_for(fmt, rng, *shape)
        data0 = p.data.copy()
        scale0 = None if p.scale is None else p.scale.copy()
        x = rng.standard_normal((3, shape[1])).astype(np.float32)
        x0 = x.copy()
        for be in backends():
            with _backend.use(be):
                for prof in kernels.profiles(fmt):
                    for k in kernels.available(fmt):
                        kernels.linear(x, p, profile=prof, kernel=k)
                if fmt in FMTS_MAD:
                    kernels.int16_lane_overflow(x, p)
        assert_same_bytes(x, x0, "x")
        assert_same_bytes(p.data, data0, "weights")
        if scale0 is not None:
            assert_same_bytes(p.scale, scale0, "scale")
    # the twinned functions too, on read-only inputs
    codes = rng.integers(-1, 2, (6, 256)).astype(np.int8)
    q = rng.integers(-128, 128, (2, 256)).astype(np.int8)
    d = formats.pack_codes("i2_s", codes, 1.0).data
    for a in (q, d):
        a.setflags(write=False)
    for m in [mad] + ([_backend.fast_module("mad")] if _backend.fast_module("mad") else []):
        m.integer_product(d, 6, 256, "i2_s", q)
        m.lane_product(d, 6, 256, "i2_s", q)


def test_threads_do_not_change_bits():
    rng = np.random.default_rng(5)
    # large enough for the twins to split rows over threads (>= 2^18 multiply-adds)
    cases = [("i2_s", (300, 1024)), ("hf_packed", (301, 1024)), ("tq2_0", (300, 1024)),
             ("tq1_0", (517, 512))]
    old = kernels.get_threads()
    try:
        for fmt, (rows, cols) in cases:
            p = weight_for(fmt, rng, rows, cols)
            for T in (1, 6):
                x = rng.standard_normal((T, cols)).astype(np.float32)
                for prof in kernels.profiles(fmt):
                    outs = []
                    for n in (1, 2, 3):
                        kernels.set_threads(n)
                        assert kernels.get_threads() == n
                        outs.append(kernels.linear(x, p, profile=prof))
                    for y in outs[1:]:
                        assert_same_bytes(y, outs[0], f"{fmt} {prof} T={T}")
    finally:
        kernels.set_threads(old)


def test_threads_default_from_env(monkeypatch):
    old = kernels._threads
    try:
        kernels.set_threads(None)
        monkeypatch.setenv("MINIBIT_THREADS", "3")
        assert kernels.get_threads() == 3
        monkeypatch.delenv("MINIBIT_THREADS")
        assert kernels.get_threads() >= 1
        monkeypatch.setenv("MINIBIT_THREADS", "zero")
        with pytest.raises(minibit.FormatError):
            kernels.get_threads()
    finally:
        kernels._threads = old


# ---- the float parts against independent computations ---------------------------------------

def unpack_hf_like_transformers(packed, rows):
    """transformers' unpack_weights, written again: shifts 0,2,4,6 on a new leading axis."""
    planes = np.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)])           # [4, R, cols]
    return planes.reshape(-1, packed.shape[1])[:rows].astype(np.float64) - 1


@given(st.integers(1, 24), st.integers(1, 300), st.integers(1, 4), st.integers(0, 2 ** 32 - 1))
def test_hf_profile_is_bitlinear(rows, cols, T, seed):
    """y = ActQuant(x) @ W.T * weight_scale in float64 (autobitlinear), within 2.5e-7 relative.

    The quantizer runs in float32 as transformers' ``ActQuant`` does on a float32 model
    (s = 127 / max(max|x|, 1e-5), which torch evaluates as 127 * (1 / max), q = round(x * s)); the matmul and scaling run here in
    float64.  minibit's R is exact, and its two float32 roundings (R / s, then * scale) stay
    within 2 * 2^-24 relative: that is the tolerance.
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    x = (rng.standard_normal((T, cols)) * np.exp(2 * rng.standard_normal((T, 1)))).astype(np.float32)
    p = formats.encode("hf_packed", w)
    W = unpack_hf_like_transformers(p.data, rows)                           # [N, K] float64
    amax = np.maximum(np.abs(x).max(axis=1, keepdims=True), np.float32(1e-5))
    s = np.float32(127) * (np.float32(1) / amax)                            # float32, as torch
    xq = np.clip(np.round(x * s), -128, 127).astype(np.float64)            # float32 product
    want = (xq @ W.T) / s.astype(np.float64) * float(p.scale[0])            # [T, N] float64
    y = kernels.linear(x, p, profile="hf")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=2.5e-7, atol=1e-30)
    if cols % 128 == 0:                        # the same weight as i2_s, the same hf numbers
        p2 = formats.pack_codes("i2_s", W.astype(np.int8), p.scale[0])
        assert_same_bytes(kernels.linear(x, p2, profile="hf"), y, "i2_s hf")


@given(st.integers(1, 12), st.integers(1, 3), st.integers(1, 4), st.integers(0, 2 ** 32 - 1))
def test_bitnet_profile_formula_without_wrap(rows, blocks, T, seed):
    """No lane wraps on ordinary data: y = ((float)(R + sum q) - (float)sum q) / s * scale."""
    rng = np.random.default_rng(seed)
    cols = 128 * blocks
    p = formats.encode("i2_s", rng.standard_normal((rows, cols)).astype(np.float32))
    x = rng.standard_normal((T, cols)).astype(np.float32)
    assert not kernels.int16_lane_overflow(x, p)
    q, s, sums = quant.quantize_act_i2s(x)
    codes, scale = formats.unpack_codes(p)
    R = q.astype(np.int64) @ codes.astype(np.int64).T                      # exact, int64
    want = ((R + sums[:, None]).astype(np.float32) - sums.astype(np.float32)[:, None]) \
        / s[:, None] * scale
    assert_same_bytes(kernels.linear(x, p), want.astype(np.float32))


def test_llama_profile_formula():
    """The llama.cpp profile is llama.cpp's x86 AVX2 order (written out here, element by
    element): per block, lane k = (e % 32) // 4 sums code * q and subtracts the block's
    32-element chunk k of q; lane k's float adds fl((float)lane * fl(d_act * d_w)) block
    after block (the 2024 fork's clang build, the "bitnet.cpp" profile) or fmaf((float)lane,
    dd, acc) (llama.cpp's gcc build, "llama.cpp"); the lanes meet as hsum_float_8.  tq.linear_q8k keeps the generic C order:
    sumf over blocks in block order."""
    from minibit.kernels import tq
    rng = np.random.default_rng(9)
    rows, cols = 6, 1024
    w = tq_weights(rng, rows, cols)
    x = rng.standard_normal((3, cols)).astype(np.float32)
    q, d, _ = quant.quantize_q8_k(x)
    for fmt in FMTS_TQ:
        p = formats.encode(fmt, w)
        codes, dw = formats.unpack_codes(p)
        want = np.zeros((3, rows), np.float32)
        generic = np.zeros((3, rows), np.float32)
        fused = np.zeros((3, rows), np.float32)
        for t in range(3):
            for n in range(rows):
                acc = np.float32(0)
                lanes = [np.float32(0)] * 8
                fl = [np.float32(0)] * 8          # fused: L * dd is exact in double, one rounding
                for b in range(cols // 256):
                    qb = q[t, 256 * b:256 * b + 256].astype(np.int64)
                    cb = codes[n, 256 * b:256 * b + 256].astype(np.int64)
                    dd = np.float32(d[t, b] * dw[n, b])
                    acc = np.float32(acc + np.float32(np.float32(int(qb @ cb)) * dd))
                    for k in range(8):
                        L = sum(int((cb[e] + 1) * qb[e]) for e in range(256) if (e % 32) // 4 == k)
                        L -= int(qb[32 * k:32 * k + 32].sum())
                        lanes[k] = np.float32(np.float32(np.float32(L) * dd) + lanes[k])
                        fl[k] = np.float32(np.float64(L) * np.float64(dd) + np.float64(fl[k]))
                s4 = [np.float32(lanes[4 + i] + lanes[i]) for i in range(4)]
                want[t, n] = np.float32(np.float32(s4[0] + s4[2]) + np.float32(s4[1] + s4[3]))
                f4 = [np.float32(fl[4 + i] + fl[i]) for i in range(4)]
                fused[t, n] = np.float32(np.float32(f4[0] + f4[2]) + np.float32(f4[1] + f4[3]))
                generic[t, n] = acc
        for kern in kernels.available(fmt):
            assert_same_bytes(kernels.linear(x, p, "bitnet.cpp", kern), want, f"{fmt} {kern}")
            assert_same_bytes(kernels.linear(x, p, "llama.cpp", kern), fused, f"{fmt} {kern} fused")
        assert_same_bytes(tq.linear_q8k(p.data, rows, cols, fmt, q, d), generic, f"{fmt} generic")
        lane = tq.lane_sums(p.data, rows, cols, fmt, q)
        assert_same_bytes(lane.sum(axis=3, dtype=np.int32), tq.block_sums(p.data, rows, cols, fmt, q),
                          f"{fmt} lanes add up to the block sums")


# ---- bitnet.cpp's int16 lanes: the wrap, emulated ---------------------------------------------

def emulate_lanes(codes, q):
    """Independent emulation: per row, per 4096-column group, per lane, sum then wrap."""
    T, K = q.shape
    N = codes.shape[0]
    out = np.zeros((T, N), np.int64)
    c = codes.astype(np.int64) + 1
    for g0 in range(0, K, 4096):
        for lane in range(16):
            cols = [k for k in range(g0, min(K, g0 + 4096)) if (k % 32) // 2 == lane]
            exact = q[:, cols].astype(np.int64) @ c[:, cols].T                 # [T, N]
            out += (exact + 32768) % 65536 - 32768                              # int16 wrap
    return out.astype(np.int32)


@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 2 ** 32 - 1))
def test_v0_lane_shortcut_equals_the_lanes(rows, blocks, seed):
    """v0's no-wrap shortcut (a token whose lanes cannot leave int16 takes one plain product)
    and its spread-over-lanes path agree with an independent emulation and with the mad
    reference, with tokens on both sides of the bound in one call."""
    rng = np.random.default_rng(seed)
    cols = 128 * blocks
    codes = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    small = rng.integers(-8, 9, (2, cols))                     # 2 * 16 * 128 chunks < 2^15
    big = rng.choice([-127, 127], (2, cols))                   # wraps once a group is long
    q = np.concatenate([small, big])[rng.permutation(4)].astype(np.int8)
    want = emulate_lanes(codes, q)
    assert_same_bytes(v0.lane_product(codes, q), want, "v0")
    p = formats.pack_codes("i2_s", codes, 1.0)
    data, _ = mad.packed_args(p, "bitnet.cpp")
    assert_same_bytes(mad.lane_product(data, rows, cols, "i2_s", q), want, "mad reference")


def test_int16_lanes_wrap_like_bitnet_cpp():
    rows, cols = 3, 4096
    codes = np.ones((rows, cols), np.int8)                  # every code 2
    x = -np.ones((2, cols), np.float32)                     # every q = -127
    x[1, ::7] = -0.5                                        # a second token, still wrapping
    for fmt in FMTS_MAD:
        p = formats.pack_codes(fmt, codes, 0.25)
        info = kernels.int16_lane_overflow(x, p)
        assert info and info.wraps and info.outputs == 2 * rows and info.worst > 32767
        assert info.first == (0, 0, 0, 0)
        q, s, sums = quant.quantize_act_i2s(x)
        exact = q.astype(np.int32) @ (codes.astype(np.int32) + 1).T             # sum code * q
        wrapped = emulate_lanes(codes, q)
        assert wrapped[0, 0] == 16 * 512 and exact[0, 0] == -2 * 127 * 4096   # -65024 -> 512
        data, scale = mad.packed_args(p, "bitnet.cpp")
        assert_same_bytes(mad.lane_product(data, rows, cols, fmt, q), wrapped, "reference")
        assert_same_bytes(v0.lane_product(codes, q), wrapped, "v0")
        if _backend.fast_module("mad") is not None:
            fast = _backend.fast_module("mad")
            for simd in simd_modes(fast):
                assert_same_bytes(run_twin(fast, simd, "lane_product", data, rows, cols, fmt, q),
                                  wrapped, f"twin simd={simd}")
        want = (wrapped.astype(np.float32) - sums.astype(np.float32)[:, None]) / s[:, None] \
            * np.float32(0.25)
        exact_y = (exact.astype(np.float32) - sums.astype(np.float32)[:, None]) / s[:, None] \
            * np.float32(0.25)
        for be in backends():
            with _backend.use(be):
                for k in kernels.available(fmt):
                    y = kernels.linear(x, p, profile="bitnet.cpp", kernel=k)
                    assert_same_bytes(y, want, f"{fmt} {be} {k}")
                    assert not np.allclose(y, exact_y)          # the wrap changes the answer
                    # the hf profile has no int16 lanes: exact
                    yh = kernels.linear(x, p, profile="hf", kernel=k)
                    assert np.allclose(yh[0], -np.float32(0.25) * 4096, rtol=1e-6)


@pytest.mark.parametrize("total,wraps", [(32766, False), (32767, False), (32768, True),
                                         (-32768, False), (-32770, True)])
def test_int16_lane_boundary(total, wraps):
    """Lane 0 of one group sums exactly `total`: int16 holds -32768..32767 and no more."""
    rows, cols = 1, 4096
    codes = np.zeros((rows, cols), np.int8) - 1             # code 0 everywhere ...
    lane0 = np.array([k for k in range(cols) if (k % 32) // 2 == 0])     # 256 columns
    codes[0, lane0] = 1                                      # ... code 2 on lane 0
    codes[0, lane0[0]] = 0                                   # code 1 there: w = 0
    q = np.zeros((1, cols), np.int8)
    q0 = int(np.sign(total)) if total % 2 else 0             # lane sum = q0 + 2 * sum(rest)
    rest = (total - q0) // 2
    vals = np.full(255, int(rest / 255), np.int64)           # |.| <= 127 each
    r = rest - int(vals.sum())
    vals[:abs(r)] += int(np.sign(r))
    q[0, lane0[0]] = q0
    q[0, lane0[1:]] = vals
    assert q0 + 2 * int(q[0, lane0[1:]].astype(np.int64).sum()) == total
    want = total if not wraps else (total + 32768) % 65536 - 32768
    for fmt in FMTS_MAD:
        p = formats.pack_codes(fmt, codes, 1.0)
        data, _ = mad.packed_args(p, "bitnet.cpp")
        impls = [(mad, None)]
        if _backend.fast_module("mad") is not None:
            fast = _backend.fast_module("mad")
            impls += [(fast, simd) for simd in simd_modes(fast)]
        for m, simd in impls:
            got = (m.lane_product(data, rows, cols, fmt, q) if simd is None
                   else run_twin(m, simd, "lane_product", data, rows, cols, fmt, q))
            assert int(got[0, 0]) == want, (fmt, simd)
        assert (mad.lane_sums(data, rows, cols, fmt, q)[0, 0, 0, 0]) == total


@given(st.integers(1, 13), st.integers(1, 40), st.integers(1, 9),
       st.sampled_from(TQ_ACTS + ("small",)), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_i2s_vnni_same_bits(rows, blocks, T, acts, raw_bytes, seed):
    """I2_S with the VNNI kernels (for tokens whose int16 lanes cannot wrap) gives the bytes
    of the AVX2 kernel (wrap included), of portable C and of the reference: lane_product,
    integer_product and linear_i2s, rows and tokens off the tiles of four, odd block counts,
    up to 40 blocks (two widening groups), saturated activations (which do wrap)."""
    fast, _ = vnni_twin("mad", ("vnni",))
    rng = np.random.default_rng(seed)
    cols = 128 * blocks
    if raw_bytes:           # any byte: code 3 included
        data = rng.integers(0, 256, rows * cols // 4 + 32).astype(np.uint8)
        data[rows * cols // 4:rows * cols // 4 + 4] = np.frombuffer(np.float32(0.5).tobytes(), np.uint8)
    else:
        data, _ = mad.packed_args(formats.pack_codes("i2_s", rng.integers(-1, 2, (rows, cols))
                                                     .astype(np.int8), 0.5), "bitnet.cpp")
    q = (rng.integers(-20, 21, (T, cols)).astype(np.int8) if acts == "small"
         else tq_acts(rng, acts, T, cols))
    s = rng.uniform(1, 100, T).astype(np.float32)
    sums = q.astype(np.int32).sum(axis=1).astype(np.int32)
    want_l = mad.lane_product(data, rows, cols, "i2_s", q)
    want_i = mad.integer_product(data, rows, cols, "i2_s", q)
    want_y = mad.linear_i2s(data, rows, cols, "i2_s", q, s, sums, np.float32(0.5))
    for simd in ("vnni", True, False):
        assert_same_bytes(run_twin(fast, simd, "lane_product", data, rows, cols, "i2_s", q),
                          want_l, f"lanes {acts} simd={simd}")
        assert_same_bytes(run_twin(fast, simd, "integer_product", data, rows, cols, "i2_s", q),
                          want_i, f"exact {acts} simd={simd}")
        assert_same_bytes(run_twin(fast, simd, "linear_i2s", data, rows, cols, "i2_s", q, s,
                                   sums, np.float32(0.5)), want_y, f"linear {acts} simd={simd}")


@given(st.integers(1, 70), st.integers(1, 4), st.integers(0, 2 ** 32 - 1))
def test_i2s_exact_flags_avx2_and_portable_agree(blocks, T, seed):
    """The no-wrap test per token: its AVX2 and portable versions agree, and a token it passes
    has the reference's wrapped lane product equal to the exact integer product."""
    fast = twin_pair("mad")[1]
    rng = np.random.default_rng(seed)
    cols = 128 * blocks
    scale = rng.choice([20, 60, 100, 128])
    q = rng.integers(-scale, scale, (T, cols)).astype(np.int8)
    q[:, rng.random(cols) < 0.5] = np.int8(-scale if rng.random() < 0.5 else scale - 1)
    flags = run_twin(fast, False, "_i2s_lanes_exact", q, cols)
    if "vnni" in simd_modes(fast) or True in simd_modes(fast):
        assert_same_bytes(run_twin(fast, True, "_i2s_lanes_exact", q, cols), flags, "avx2 flags")
    data = np.full(cols // 4 + 32, 0xFF, np.uint8)                           # code 3: worst case
    lanes = mad.lane_product(data, 1, cols, "i2_s", q)[:, 0]
    exact = 3 * q.astype(np.int64).sum(axis=1)
    for t in range(T):
        if flags[t]:
            assert int(lanes[t]) == int(exact[t])


@pytest.mark.parametrize("pos", [True, False])
def test_i2s_vnni_exact_bound(pos):
    """The per-token test that lets the VNNI kernel run: a lane whose activations sum to P
    (> 0) or N (< 0) over a widening group can reach 3 P or 3 N with code 3 (raw bytes 0xFF):
    P = 10922 / N = -10922 pass (32766, -32766), P = 10923 / N = -10923 fail (they would wrap),
    and in every case the twin gives the reference's bytes."""
    fast, _ = vnni_twin("mad", ("vnni",))
    rows, cols = 5, 4096
    data = np.full(rows * cols // 4 + 32, 0xFF, np.uint8)                 # code 3 everywhere
    lane0 = np.array([k for k in range(cols) if (k % 32) // 2 == 0])     # 256 columns
    sign = 1 if pos else -1
    for total, ok in ((10922, True), (10923, False)):
        q = np.zeros((5, cols), np.int8)                                  # 5 tokens: GEMM + GEMV
        vals = np.full(256, total // 256, np.int64)
        vals[:total - int(vals.sum())] += 1
        q[:, lane0] = sign * vals
        assert int(q[0].astype(np.int64).sum()) == sign * total
        for simd in (True, False):                                        # AVX2, portable C
            assert list(run_twin(fast, simd, "_i2s_lanes_exact", q, cols)) == [ok] * 5
            assert list(run_twin(fast, simd, "_i2s_lanes_exact", q, cols, False)) == [1] * 5
        want = mad.lane_product(data, rows, cols, "i2_s", q)
        assert (int(want[0, 0]) == 3 * sign * total) == ok                # wrapped when not ok
        for simd in ("vnni", True, False):
            assert_same_bytes(run_twin(fast, simd, "lane_product", data, rows, cols, "i2_s", q),
                              want, f"total={sign * total} simd={simd}")


def test_no_wrap_on_ordinary_activations():
    rng = np.random.default_rng(11)
    p = formats.encode("i2_s", rng.standard_normal((64, 8192)).astype(np.float32))
    info = kernels.int16_lane_overflow(rng.standard_normal((4, 8192)).astype(np.float32), p)
    assert not info and info.outputs == 0 and info.first is None and 0 < info.worst < 32768
    with pytest.raises(minibit.FormatError):
        kernels.int16_lane_overflow(np.ones((1, 256), np.float32),
                                    formats.encode("tq2_0", np.ones((2, 256), np.float32)))
