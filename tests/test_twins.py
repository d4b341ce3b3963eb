"""Every twin, walked generically: each reference module's TWINNED functions exist in its
Cython twin with the same signature and give the same bytes; and every array argument of
every twinned function, drawn read-only, non-contiguous, misaligned or of a wrong dtype,
gives the same result on both sides or the same clear error (FormatError / ValueError) --
never a crash, never a silent write into a read-only buffer.

The per-function tests (test_quant, test_formats, test_kernels, ...) draw values; this file
draws the buffers.  The example inputs below are small and valid; each is built fresh for
each side so no call can see the other's writes.
"""

import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minibit import _backend, formats
from minibit.formats import tl1, tl2
from minibit.kernels import lut
from minibit.model import ggml
from minibit.model.layers import rope_tables
from minibit.sampling import SamplingParams

from conftest import assert_same_bytes, twin_pair

R = np.random.default_rng(0)


def _f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


def _codes(*shape):
    return R.integers(-1, 2, shape).astype(np.int8)


def _q(*shape):
    return R.integers(-128, 128, shape).astype(np.int8)


_I2S = formats.encode("i2_s", _f32(8, 128)).data
_HFP = formats.encode("hf_packed", _f32(10, 64))
_TQ2 = formats.encode("tq2_0", _f32(3, 256)).data
_TQ1 = formats.encode("tq1_0", _f32(3, 256)).data
_TL1P, _TL2P = (formats.pack_codes(f, _codes(64, 96), np.float32(0.5)) for f in ("tl1", "tl2"))
_TL1 = tl1.default_params(64, 96)
_TL2 = tl2.default_params(64, 96)
_TLC = _codes(64, 96)
_COS, _SIN = rope_tables(np.arange(3, 6), 8, 10000.0)
_GCOS, _GSIN = ggml.rope_tables(np.arange(3, 6), 8, 10000.0)

# twin name -> {function: () -> args}; every TWINNED function of every twin has one
EXAMPLES = {
    "quant": {
        "absmean_ternarize": lambda: (_f32(8, 64),),
        "quantize_act_hf": lambda: (_f32(3, 64),),
        "quantize_act_i2s": lambda: (_f32(3, 128),),
        "quantize_act_tl": lambda: (_f32(3, 64),),
        "quantize_q8_k": lambda: (_f32(2, 256),),
    },
    "hf_packed": {
        "pack": lambda: (_codes(10, 16),),
        "unpack": lambda: (_HFP.data.copy(), 10),
    },
    "i2_s": {
        "pack": lambda: (_codes(4, 128), np.float32(0.5)),
        "unpack": lambda: (_I2S.copy(), 8, 128),
    },
    "tq2_0": {
        "quantize": lambda: (_f32(3, 256),),
        "unpack": lambda: (_TQ2.copy(), 3, 256),
        "dequantize": lambda: (_TQ2.copy(), 3, 256),
    },
    "tq1_0": {
        "quantize": lambda: (_f32(3, 256),),
        "unpack": lambda: (_TQ1.copy(), 3, 256),
        "dequantize": lambda: (_TQ1.copy(), 3, 256),
    },
    "tl1": {
        "pack": lambda: (_TLC.copy(), _TL1["BM"], _TL1["BK"], _TL1["bm"]),
        "unpack": lambda: (_TL1P.data.copy(), 64, 96, _TL1["BM"], _TL1["BK"], _TL1["bm"]),
    },
    "tl2": {
        "pack": lambda: (_TLC.copy(), _TL2["BM"], _TL2["BK"], _TL2["bm"]),
        "unpack": lambda: (_TL2P.data.copy(), 64, 96, _TL2["BM"], _TL2["BK"], _TL2["bm"]),
    },
    "mad": {
        "integer_product": lambda: (_I2S.copy(), 8, 128, "i2_s", _q(2, 128)),
        "lane_product": lambda: (_I2S.copy(), 8, 128, "i2_s", _q(2, 128)),
        "linear_hf": lambda: (_HFP.data.copy(), 10, 64, "hf_packed", _q(2, 64),
                              np.float32([3.0, 5.0]), np.float32(0.25)),
        "linear_i2s": lambda: (_I2S.copy(), 8, 128, "i2_s", _q(2, 128), np.float32([3.0, 5.0]),
                               np.int32([7, -9]), np.float32(0.25)),
        "linear_i2s_group": lambda: ([_I2S.copy(), _I2S.copy()], [8, 8], 128, "i2_s", _q(2, 128),
                                     np.float32([3.0, 5.0]), np.int32([7, -9]),
                                     [np.float32(0.25), np.float32(-0.5)]),
    },
    "tq": {
        "block_sums": lambda: (_TQ2.copy(), 3, 256, "tq2_0", _q(2, 256)),
        "linear_q8k": lambda: (_TQ1.copy(), 3, 256, "tq1_0", _q(2, 256),
                               np.float32([[0.01], [0.02]])),
        "lane_sums": lambda: (_TQ2.copy(), 3, 256, "tq2_0", _q(2, 256)),
        "linear_q8k_avx2": lambda: (_TQ2.copy(), 3, 256, "tq2_0", _q(2, 256),
                                    np.float32([[0.01], [0.02]])),
        "linear_q8k_avx2_group": lambda: ([_TQ2.copy(), _TQ2[:2].copy()], [3, 2], 256, "tq2_0",
                                          _q(2, 256), np.float32([[0.01], [0.02]])),
    },
    "lut": {
        "tl1_integer": lambda: (_q(2, 96), _TL1P),
        "tl2_integer": lambda: (_q(2, 96), _TL2P),
        "tl_integer": lambda: (_q(2, 96), _TL2P),
        "tl_output": lambda: (R.integers(-999, 999, (2, 64)).astype(np.int32),
                              np.float32([3.0, 5.0]), np.float32(0.25)),
        "linear_tl": lambda: (_f32(2, 96), _TL1P),
        "tmac_pack": lambda: (_codes(40, 24),),
        "tmac_integer": lambda: (_q(2, 24), lut.tmac_pack(_TLC[:40, :24]), 40),
    },
    "dense": {
        "matmul_t": lambda: (_f32(2, 40), _f32(5, 40), "F32", np.zeros((2, 5), np.float32)),
    },
    "layers": {
        "expf": lambda: (_f32(10),),
        "rms_norm": lambda: (_f32(2, 64), _f32(64), 1e-5),
        "apply_rope": lambda: (_f32(3, 2, 8), _COS.copy(), _SIN.copy()),
        "attention": lambda: (_f32(2, 4, 8), _f32(2, 5, 8), _f32(2, 5, 8), 3),
        "ffn_act": lambda: (_f32(2, 16), _f32(2, 16), "silu"),
        "store_kv": lambda: (np.zeros((2, 6, 8), np.float32), 1, _f32(3, 2, 8)),
    },
    "quant_a48": {
        "quantize_act_a4": lambda: (_f32(3, 64),),
        "quantize_act_a8": lambda: (_f32(3, 64),),
        "topk_sparsify": lambda: (_f32(3, 64),),
        "quantize_kv_int3": lambda: (_f32(3, 2, 8),),
    },
    "float_ternary": {
        "matmul": lambda: (_f32(2, 64), _HFP.data.copy(), 10, 64, np.abs(_f32(10, 2)), 32),
        "mkl_linear": lambda: (_f32(5, 64), _HFP.data.copy(), 10, 64, np.float32(0.5)),
    },
    "ggml": {
        "rms_norm": lambda: (_f32(2, 64), _f32(64), 1e-5),
        "rope_tables": lambda: (np.arange(3, 6), 8, 10000.0),
        "rope_neox": lambda: (_f32(3, 2, 8), _GCOS.copy(), _GSIN.copy()),
        "v_expf": lambda: (_f32(10),),
        "silu": lambda: (_f32(2, 16),),
        "vec_dot_f16": lambda: (_f32(3, 16), _f32(3, 16)),
        "vec_dot_f32": lambda: (_f32(3, 16), _f32(3, 16)),
        "tinyblas": lambda: (_f32(3, 16), _f32(3, 16)),
        "attention": lambda: (_f32(2, 4, 8), _f32(2, 5, 8), _f32(2, 5, 8), 3),
        "flash_attn": lambda: (_f32(2, 4, 8), _f32(2, 5, 8), _f32(2, 5, 8), 3),
        "lm_head": lambda: (_f32(2, 16), _f32(5, 16), "F32"),
    },
    "sampling": {
        "candidates": lambda: (_f32(50), np.array([1, 2, 3]), SamplingParams(top_k=10)),
        "sample": lambda: (_f32(50), np.array([1, 2, 3]), SamplingParams(top_k=10),
                           np.random.default_rng(5)),
    },
}

CASES = [(name, fn) for name in _backend.TWINS for fn in EXAMPLES.get(name, {})]


def example(name, fn):
    """The example arguments of name.fn, the same values on every call."""
    global R
    R = np.random.default_rng(1)
    return EXAMPLES[name][fn]()


def _impl(name, fn, side):
    ref, fast = twin_pair(name)
    return getattr(ref if side == "ref" else fast, fn)


def _outcome(f, args):
    """(result, arrays the call was given afterwards) or the exception's class and message."""
    try:
        return "ok", f(*args), [a for a in args if isinstance(a, np.ndarray)]
    except ValueError as e:                 # FormatError is a ValueError
        return "error", type(e), str(e)


def _same(a, b, what):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{what}[{i}]")
    elif isinstance(a, np.ndarray) or isinstance(a, np.generic):
        assert_same_bytes(a, b, what)
    else:
        assert a == b, (what, a, b)


@pytest.mark.parametrize("name", list(_backend.TWINS))
def test_twin_has_the_reference_functions(name):
    ref, fast = twin_pair(name)
    public = sorted(k for k, v in vars(fast).items() if callable(v) and not k.startswith("_")
                    and getattr(v, "__module__", None) == fast.__name__)
    assert sorted(ref.TWINNED) == public
    for fn in ref.TWINNED:
        assert (list(inspect.signature(getattr(fast, fn)).parameters)
                == list(inspect.signature(getattr(ref, fn)).parameters)), fn
    assert sorted(EXAMPLES[name]) == sorted(ref.TWINNED)   # every function is walked below


@pytest.mark.parametrize("name, fn", CASES)
def test_twin_same_bytes(name, fn):
    a, b = _outcome(_impl(name, fn, "ref"), example(name, fn)), \
        _outcome(_impl(name, fn, "twin"), example(name, fn))
    assert a[0] == b[0] == "ok", (a, b)
    _same(a[1], b[1], f"{name}.{fn}")
    _same(tuple(a[2]), tuple(b[2]), f"{name}.{fn} arguments after the call")


# ---- buffers: read-only, non-contiguous, misaligned, wrong dtype ---------------------------

def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _strided(a):
    """The same values, every other element of a twice-as-long last axis (not contiguous)."""
    if a.ndim == 0:
        return a
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _misaligned(a):
    """The same values in a buffer that starts one byte off the dtype's alignment."""
    if a.itemsize == 1 or a.ndim == 0:
        return a
    raw = np.zeros(a.nbytes + 1, np.uint8)
    out = raw[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


WRONG = {np.dtype(np.float32): np.float64, np.dtype(np.float16): np.float32,
         np.dtype(np.int8): np.int16, np.dtype(np.uint8): np.int8,
         np.dtype(np.int32): np.int64, np.dtype(np.int64): np.int32}


def _wrong_dtype(a):
    return a.astype(WRONG.get(a.dtype, np.float32))


MUTATIONS = {"read_only": _read_only, "strided": _strided, "misaligned": _misaligned,
             "wrong_dtype": _wrong_dtype}


@given(case=st.sampled_from(CASES), how=st.sampled_from(sorted(MUTATIONS)), data=st.data())
def test_twin_buffers(case, how, data):
    """One array argument replaced by its read-only / strided / misaligned / wrong-dtype
    version: both sides agree on the bytes, or both raise the same clear error."""
    name, fn = case
    twin_pair(name)                          # skip (or fail under MINIBIT_REQUIRE_FAST) early
    probe = example(name, fn)
    arrays = [i for i, a in enumerate(probe) if isinstance(a, np.ndarray) and a.ndim]
    if not arrays:
        return
    i = data.draw(st.sampled_from(arrays), label="argument")

    def args():
        a = list(example(name, fn))
        a[i] = MUTATIONS[how](a[i])
        return a

    ref, twin = _outcome(_impl(name, fn, "ref"), args()), _outcome(_impl(name, fn, "twin"), args())
    assert ref[0] == twin[0], (f"{name}.{fn} arg {i} {how}: reference {ref[:2]}, twin {twin[:2]}")
    if ref[0] == "ok":
        _same(ref[1], twin[1], f"{name}.{fn} arg {i} {how}")
        _same(tuple(ref[2]), tuple(twin[2]), f"{name}.{fn} arg {i} {how}: arguments after")
    else:
        assert ref[1] is twin[1], (ref, twin)
