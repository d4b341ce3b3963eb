"""Spectra TriLM checkpoints (profile "trilm"): exact shard detection, float activations
against transformers' LlamaForCausalLM, the float kernel's twin, and TQ GGUF round trips."""

import os

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import minibit
from minibit.formats import hf_packed
from minibit.io.synthetic import write_trilm_checkpoint
from minibit.io.trilm import TriLinear, split_ternary
from minibit.kernels import float_ternary
from conftest import assert_model_backends_agree, twin_pair

F32 = np.float32
IDS = [256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 32, 84, 104, 101]

# (shards, hidden, heads, kv_heads, intermediate): MHA and GQA, 1 to 4 shards
CASES = {
    "mp1-mha": (1, 64, 4, 4, 128),
    "mp2-gqa": (2, 64, 4, 2, 128),
    "mp3-gqa": (3, 96, 6, 3, 192),
    "mp4-gqa": (4, 64, 4, 2, 128),
    "mp2-mha-tied": (2, 64, 4, 4, 128),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    out = {}
    for i, (name, (sh, h, nh, kv, inter)) in enumerate(CASES.items()):
        out[name] = write_trilm_checkpoint(str(tmp_path_factory.mktemp(name)), shards=sh, hidden=h,
                                           heads=nh, kv_heads=kv, intermediate=inter,
                                           tied=name.endswith("tied"), seed=10 + i)
    return out


# ---- detection -------------------------------------------------------------------------------

def test_split_ternary_rows_and_columns():
    codes = np.array([[1, 0, -1, 1], [0, -1, 1, 1], [1, 1, 0, -1], [-1, 0, 0, 1]], np.int8)
    rows = codes * np.array([[0.5], [0.5], [2.0], [2.0]], F32)     # 2 row shards
    c, s, n = split_ternary(rows, 0, None, "w")
    assert n == 2 and s.tolist() == [0.5, 2.0] and np.array_equal(c, codes)
    cols = codes * np.array([[0.25, 0.25, 4.0, 4.0]], F32)         # 2 column shards
    c, s, n = split_ternary(cols, 1, 2, "w")
    assert n == 2 and s.tolist() == [0.25, 4.0] and np.array_equal(c, codes)
    # the same matrix split the other way is not per-shard ternary
    with pytest.raises(minibit.FormatError, match="do not fall into equal row blocks"):
        split_ternary(cols, 0, None, "w")


def test_split_ternary_refuses_four_values():
    w = np.array([[1.0, -1.0, 0.5, 0.0]], F32)                     # two magnitudes in one row
    with pytest.raises(minibit.FormatError, match="w: its 2 magnitudes .* not a TriLM ternary matrix"):
        split_ternary(w, 0, None, "w")


def test_float_llama_is_refused_naming_the_file(tmp_path):
    d = write_trilm_checkpoint(str(tmp_path / "f"), ternary=False)
    with pytest.raises(minibit.FormatError) as e:
        minibit.load(d)
    msg = str(e.value)
    assert "model.safetensors" in msg and "q_proj.weight" in msg and "not ternary" in msg
    assert "float LLaMA" in msg


def test_trilm_weights_are_packed_with_their_scales(ckpts):
    from safetensors.numpy import load_file
    d = ckpts["mp2-gqa"]
    m = minibit.load(d)
    raw = load_file(os.path.join(d, "model.safetensors"))
    L = m.transformer.layers[0]
    assert isinstance(L.q, TriLinear) and isinstance(L.down, TriLinear)
    for key, name, axis in (("q", "self_attn.q_proj", 0), ("down", "mlp.down_proj", 1)):
        lin = getattr(L, key)
        w = raw[f"model.layers.0.{name}.weight"].astype(F32)
        assert lin.packed.data.dtype == np.uint8 and lin.packed.data.nbytes == w.size // 4
        codes = hf_packed.unpack_codes(lin.packed)[0]
        scale = np.repeat(lin.grid, lin.block, axis=1)
        assert np.array_equal(codes * scale, w)                    # exactly the file's weight
        assert lin.block == (w.shape[1] if axis == 0 else w.shape[1] // 2)
    with pytest.raises(minibit.FormatError, match="runs under profile 'trilm' only"):
        m.profile = "hf"


def test_one_shard_trilm_is_an_ordinary_ternary_model(ckpts):
    m = minibit.load(ckpts["mp1-mha"], profile="hf")               # int8 activations allowed
    assert not any(isinstance(lin, TriLinear) for L in m.transformer.layers for lin in L.linears())
    assert np.isfinite(m.logits(IDS)).all()


# ---- against transformers ------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(ckpts, name):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    tm = transformers.LlamaForCausalLM.from_pretrained(ckpts[name], dtype=torch.float32,
                                                       attn_implementation="eager").eval()
    m = minibit.load(ckpts[name])
    assert m.profile == "trilm"
    with torch.no_grad():
        ref = tm(torch.tensor([IDS])).logits[0].numpy()
    ours = m.logits(IDS)
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    print(f"{name}: relative max|diff| {rel:.3g}")
    assert rel <= 1e-5                                             # float32 rounding only
    tm.generation_config.eos_token_id = None
    with torch.no_grad():
        gen = tm.generate(torch.tensor([IDS[:4]]), max_new_tokens=24, do_sample=False,
                          pad_token_id=0)[0, 4:].tolist()
    cache, ours_gen = m.new_cache(64), []
    logits = m.forward(IDS[:4], cache, last_only=True)
    for _ in range(24):
        nxt = int(np.argmax(logits[-1]))
        ours_gen.append(nxt)
        logits = m.forward([nxt], cache, last_only=True)
    assert ours_gen == gen


def test_generate_and_backends_bit_identical(ckpts):
    m = minibit.load(ckpts["mp3-gqa"])
    text = m.generate("Hello", max_new_tokens=10, temperature=0.8, seed=3)
    assert isinstance(text, str)
    assert_model_backends_agree(m, IDS, "float_ternary")


# ---- the float kernel ---------------------------------------------------------------------

def test_float_ternary_worked_example():
    x = np.array([[1, 2, 3, 4]], F32)
    codes = np.array([[1, -1, 0, 1]], np.int8)
    y = float_ternary.matmul(x, hf_packed.pack(codes), 1, 4, np.array([[0.5, 2.0]], F32), 2)
    assert y.tolist() == [[7.5]]                                   # -1 * 0.5 + 4 * 2


@given(st.integers(1, 4), st.integers(1, 40), st.sampled_from([(1, 70), (2, 64), (3, 33), (4, 32)]),
       st.integers(0, 2**31 - 1))
def test_twin_float_ternary(T, rows, blocks, seed):
    ref, fast = twin_pair("float_ternary")
    nb, width = blocks
    rng = np.random.default_rng(seed)
    cols = nb * width
    x = (rng.standard_normal((T, cols)) * 10).astype(F32)
    codes = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    grid = rng.uniform(0.01, 2, (rows, nb)).astype(F32)
    data = hf_packed.pack(codes)
    a = ref.matmul(x, data, rows, cols, grid, width)
    assert np.array_equal(a, fast.matmul(x, data, rows, cols, grid, width))
    exact = x.astype(np.float64) @ (codes * np.repeat(grid, width, axis=1)).T.astype(np.float64)
    assert np.allclose(a, exact, rtol=1e-5, atol=1e-4 * np.abs(x).max())


def test_float_ternary_rejects_bad_shapes():
    x = np.zeros((1, 8), F32)
    data = hf_packed.pack(np.zeros((4, 8), np.int8))
    with pytest.raises(minibit.FormatError, match="block 3 does not divide"):
        float_ternary.matmul(x, data, 4, 8, np.ones((4, 2), F32), 3)
    with pytest.raises(minibit.FormatError, match="scales must be"):
        float_ternary.matmul(x, data, 4, 8, np.ones((4, 3), F32), 4)


# ---- GGUF: TQ2_0 / TQ1_0, llama.cpp's path for TriLM ----------------------------------------

@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
def test_gguf_round_trip(tmp_path, fmt):
    pytest.importorskip("gguf")
    d = write_trilm_checkpoint(str(tmp_path / "big"), shards=2, hidden=512, intermediate=512,
                               heads=8, kv_heads=4, layers=1, seed=5)
    m = minibit.load(d)
    path = minibit.save_gguf(m, str(tmp_path / f"t.{fmt}.gguf"), weight_format=fmt, progress=False)
    back = minibit.load(path, profile="trilm")
    from minibit.formats import unpack_codes
    for key in ("q", "k", "o", "gate", "down"):
        orig = getattr(m.transformer.layers[0], key)
        codes = hf_packed.unpack_codes(orig.packed)[0].astype(F32)
        w = codes * np.repeat(orig.grid, orig.block, axis=1)
        bc, bs = unpack_codes(getattr(back.transformer.layers[0], key).packed)
        if key in ("q", "k"):                                      # llama arch: rows permuted
            continue
        wb = bc.reshape(bc.shape[0], -1, 256).astype(F32) * bs[:, :, None]
        assert np.array_equal(wb.reshape(w.shape), w), key         # fp16 scales: lossless
    a, b = m.logits(IDS), back.logits(IDS)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()           # block sums in another order
    assert np.isfinite(minibit.load(path).logits(IDS)).all()       # llama.cpp's int8 numerics


def test_gguf_refuses_shards_inside_a_tq_block(tmp_path, ckpts):
    pytest.importorskip("gguf")
    m = minibit.load(ckpts["mp2-gqa"])                             # 64 columns: no 256-blocks
    with pytest.raises(minibit.FormatError, match="multiples of 256"):
        minibit.save_gguf(m, str(tmp_path / "x.gguf"), progress=False)
