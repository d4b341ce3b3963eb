"""GGUF in and out (minibit.io.gguf): files minibit writes load back with the same logits,
gguf-py reads the TQ files, I2_S files hold bitnet.cpp's bytes, the tokenizer survives the
trip, llama-arch q/k rows are permuted as llama.cpp's converter does, and damaged files
raise FormatError without allocating what their fields claim.
"""

import json
import os
import struct
import tracemalloc

import numpy as np
import pytest

import minibit
from minibit import FormatError, formats
from minibit.io import gguf as mg
from minibit.io.synthetic import write_checkpoint

gguf = pytest.importorskip("gguf")

# hidden and FFN multiples of 256 (TQ) and 128 (I2_S); small enough for one core
SIZES = dict(hidden=256, intermediate=512, heads=4, kv_heads=2, vocab=300, layers=2)
ARCHS = ("bitnet", "bitnet-b1.58", "llama")
IDS = [256, 5, 17, 200, 33, 99, 257, 1, 64]


def _fp16_exact(d):
    """Round the embedding / lm_head of a synthetic checkpoint to fp16 values, so the F16
    copy a GGUF file holds (as llama.cpp's converter writes it) is exact."""
    from safetensors.numpy import load_file, save_file

    f = os.path.join(d, "model.safetensors")
    t = load_file(f)
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        if k in t:
            t[k] = t[k].astype(np.float16).astype(np.float32)
    save_file(t, f, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    made = {}

    def get(arch, tied=True):
        if (arch, tied) not in made:
            d = str(tmp_path_factory.mktemp(f"{arch}-{'tied' if tied else 'untied'}"))
            write_checkpoint(d, arch, tied=tied, seed=7, **SIZES)
            _fp16_exact(d)
            with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump({"chat_template": "{% for m in messages %}{{ m['role'] }}: "
                                            "{{ m['content'] }}</s>{% endfor %}"}, f)
            made[(arch, tied)] = d
        return made[(arch, tied)]
    return get


@pytest.fixture(scope="module")
def gfile(ckpt, tmp_path_factory):
    made = {}

    def get(arch, fmt, tied=True):
        if (arch, fmt, tied) not in made:
            m = minibit.load(ckpt(arch, tied))
            p = str(tmp_path_factory.mktemp("gguf") / f"{arch}-{fmt}.gguf")
            mg.save_gguf(m, p, weight_format=fmt, progress=False)
            made[(arch, fmt, tied)] = p
        return made[(arch, fmt, tied)]
    return get


def _repacked(model, fmt, profile):
    """The HF model with every projection repacked to ``fmt`` from its codes and scale (what
    a converter writes), run under ``profile``."""
    for L in model.transformer.layers:
        for lin in L.linears():
            codes, scale = formats.unpack_codes(lin.packed)
            lin.packed = formats.pack_codes(fmt, codes, scale)
    model.profile = profile
    return model


# ---------------------------------------------------------------------------- logits

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0", "i2_s"])
def test_gguf_logits_equal_hf_dir(ckpt, gfile, arch, fmt):
    path = gfile(arch, fmt)
    g = minibit.load(path)                                   # a .gguf source goes to load_gguf
    natural = "llama.cpp" if fmt.startswith("tq") else "bitnet.cpp"
    assert g.profile == natural
    assert g.config.arch == arch
    assert {lin.packed.fmt for L in g.transformer.layers for lin in L.linears()} == {fmt}
    if fmt.startswith("tq"):
        # no (hf_packed, llama.cpp) kernel: the reference is the HF model's codes and scales
        # packed as TQ (fp16 block scales, as llama.cpp's converter writes)
        ref = _repacked(minibit.load(ckpt(arch)), fmt, "llama.cpp")
    else:
        ref = minibit.load(ckpt(arch), profile="bitnet.cpp")
    a, b = g.logits(IDS), ref.logits(IDS)
    hf = minibit.load(ckpt(arch), profile="hf").logits(IDS)
    print(f"{arch} {fmt} [{natural}]: max|gguf - same-profile ref| = {np.abs(a - b).max():.3g}, "
          f"max|gguf - hf profile| = {np.abs(a - hf).max():.3g}, "
          f"top-1 agreement with hf {np.mean(a.argmax(-1) == hf.argmax(-1)):.2f}")
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("arch", ARCHS)
def test_i2_s_under_hf_profile_equals_hf_dir(ckpt, gfile, arch):
    g = mg.load_gguf(gfile(arch, "i2_s"), "hf")
    ref = minibit.load(ckpt(arch), profile="hf")
    # a "bitlinear" (llama-arch) checkpoint divides by weight_scale under hf, as transformers,
    # and an "autobitlinear" one takes transformers' float F.linear (hf_linear); a GGUF keeps
    # only the codes and the multiplier, so its hf profile is the integer product: compare
    # with that
    import dataclasses
    for L in ref.transformer.layers:
        for lin in L.linears():
            lin.packed = dataclasses.replace(lin.packed, divisor=None, hf_linear=None)
    np.testing.assert_array_equal(g.logits(IDS), ref.logits(IDS))


@pytest.mark.parametrize("arch", ["llama", "bitnet-b1.58"])
def test_untied_output_round_trips(ckpt, gfile, arch):
    g = minibit.load(gfile(arch, "i2_s", tied=False))
    assert g.transformer.lm_head is not None and not g.config.tie_word_embeddings
    ref = minibit.load(ckpt(arch, tied=False), profile="bitnet.cpp")
    np.testing.assert_array_equal(g.logits(IDS), ref.logits(IDS))


def test_untied_bitnet_arch_is_refused(ckpt, tmp_path):
    m = minibit.load(ckpt("bitnet", tied=False))
    with pytest.raises(FormatError, match="no output tensor"):
        mg.save_gguf(m, str(tmp_path / "x.gguf"), progress=False)


@pytest.mark.parametrize("fmt", ["tl1", "tl2"])
def test_tl_files_read_back(ckpt, gfile, fmt):
    path = gfile("bitnet-b1.58", fmt)
    f = mg.GGUFFile(path)
    t = f.info("blk.0.ffn_up.weight")
    assert t.type_id == {"tl1": 38, "tl2": 39}[fmt] and t.type_name == fmt.upper()
    assert f.info("blk.0.ffn_up.weight_scale").type_name == "F32"
    g = minibit.load(path)
    assert g.profile == "bitnet.cpp"
    ref = _repacked(minibit.load(ckpt("bitnet-b1.58")), fmt, "bitnet.cpp")
    np.testing.assert_array_equal(g.logits(IDS), ref.logits(IDS))


def test_id_39_without_scale_sibling_is_mxfp4(tmp_path):
    p = tmp_path / "mx.gguf"
    p.write_bytes(_gguf_bytes(tensors=[("w", (32, 2), 39, 0)], data=bytes(34)))
    assert mg.GGUFFile(str(p)).info("w").type_name == "MXFP4"


def test_profiles_other_than_the_natural_one(gfile, tmp_path):
    # bitnet.cpp's 2024 fork runs TQ files with llama.cpp's TQ kernels (its own float order)
    tq = mg.load_gguf(gfile("bitnet-b1.58", "tq2_0"), "bitnet.cpp")
    assert {lin.packed_for("bitnet.cpp").fmt for L in tq.transformer.layers
            for lin in L.linears()} == {"tq2_0"}
    assert np.isfinite(tq.logits(IDS)).all()
    # an I2_S file under llama.cpp's numerics = that model converted to TQ2_0 (fp16 block
    # scales, as llama.cpp's converter writes them) and run by llama.cpp
    i2 = mg.load_gguf(gfile("bitnet-b1.58", "i2_s"), "llama.cpp")
    conv = str(tmp_path / "conv.gguf")
    mg.save_gguf(mg.load_gguf(gfile("bitnet-b1.58", "i2_s")), conv, "tq2_0", progress=False)
    np.testing.assert_array_equal(i2.logits(IDS), mg.load_gguf(conv, "llama.cpp").logits(IDS))


def test_convert_tq_to_other_tq_and_i2_s_keeps_logits(gfile, tmp_path):
    m = minibit.load(gfile("bitnet", "tq2_0"))
    p = str(tmp_path / "again.gguf")
    mg.save_gguf(m, p, "tq1_0", progress=False)
    np.testing.assert_array_equal(minibit.load(p).logits(IDS), m.logits(IDS))


# ---------------------------------------------------------------------------- gguf-py reads ours

@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
def test_gguf_py_reads_tq_files(ckpt, gfile, arch, fmt):
    path = gfile(arch, fmt)
    r = gguf.GGUFReader(path)
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    name = {"bitnet": "bitnet", "bitnet-b1.58": "bitnet-b1.58", "llama": "llama"}[arch]
    assert f["general.architecture"] == name
    assert f["general.file_type"] == {"tq1_0": 36, "tq2_0": 37}[fmt]
    assert f[f"{name}.block_count"] == SIZES["layers"]
    assert f[f"{name}.embedding_length"] == SIZES["hidden"]
    assert f[f"{name}.feed_forward_length"] == SIZES["intermediate"]
    assert f[f"{name}.attention.head_count"] == SIZES["heads"]
    assert f[f"{name}.attention.head_count_kv"] == SIZES["kv_heads"]
    assert f["tokenizer.ggml.model"] == "gpt2"
    assert len(f["tokenizer.ggml.tokens"]) == SIZES["vocab"]
    assert f["tokenizer.ggml.bos_token_id"] == 256 and f["tokenizer.ggml.eos_token_id"] == 257
    qt = getattr(gguf.GGMLQuantizationType, fmt.upper())
    types = {t.name: t.tensor_type for t in r.tensors}
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in r.tensors}
    h, ff = SIZES["hidden"], SIZES["intermediate"]
    kvd = SIZES["kv_heads"] * h // SIZES["heads"]
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.F16
    assert shapes["token_embd.weight"] == (h, SIZES["vocab"])                   # ggml ne order
    for i in range(SIZES["layers"]):
        for g_name, ne in {"attn_q": (h, h), "attn_k": (h, kvd), "attn_v": (h, kvd),
                           "attn_output": (h, h), "ffn_gate": (h, ff), "ffn_up": (h, ff),
                           "ffn_down": (ff, h)}.items():
            assert types[f"blk.{i}.{g_name}.weight"] == qt
            assert shapes[f"blk.{i}.{g_name}.weight"] == ne
        assert types[f"blk.{i}.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
        assert (f"blk.{i}.ffn_sub_norm.weight" in types) == (arch != "llama")
    # the bytes are gguf-py's own quantization of the HF codes * scale
    hf = minibit.load(ckpt(arch))
    codes, scale = formats.unpack_codes(hf.transformer.layers[1].v.packed)
    t = next(t for t in r.tensors if t.name == "blk.1.attn_v.weight")
    want = gguf.quants.quantize(codes.astype(np.float32) * scale, qt)
    assert np.asarray(t.data).tobytes() == want.tobytes()


def test_i2_s_bytes_are_bitnet_cpp_layout(ckpt, gfile):
    path = gfile("bitnet-b1.58", "i2_s")
    f = mg.GGUFFile(path)
    assert f.fields["general.file_type"] == 40
    hf = minibit.load(ckpt("bitnet-b1.58"))
    for i, L in enumerate(hf.transformer.layers):
        for g_name, field in mg.PROJ.items():
            t = f.info(f"blk.{i}.{g_name}.weight")
            rows, cols = getattr(L, field).shape
            assert t.type_id == 36 and t.type_name == "I2_S"
            assert t.ne == (cols, rows) and t.nbytes == rows * cols // 4 + 32
            codes, scale = formats.unpack_codes(getattr(L, field).packed)
            raw = f.raw(t.name)
            assert raw.tobytes() == formats.pack_codes("i2_s", codes, scale).data.tobytes()
            assert np.frombuffer(raw[rows * cols // 4:][:4].tobytes(), "<f4")[0] == scale
    with pytest.raises(Exception):          # why minibit has its own parser: id 36 is unknown there
        gguf.GGUFReader(path)


# ---------------------------------------------------------------------------- llama q/k permutation

def test_permutation_is_llama_cpp_converter_formula():
    rng = np.random.default_rng(0)
    for n_head, hd in ((4, 8), (2, 64), (1, 2)):
        w = rng.standard_normal((n_head * hd, 5)).astype(np.float32)
        ref = w.reshape(n_head, 2, hd // 2, 5).swapaxes(1, 2).reshape(w.shape)  # convert_hf_to_gguf permute
        np.testing.assert_array_equal(mg.permute_rows(w, n_head), ref)
        np.testing.assert_array_equal(mg.unpermute_rows(ref, n_head), w)
    with pytest.raises(FormatError):
        mg.permute_rows(np.zeros((6, 2)), 4)


@pytest.mark.parametrize("fmt", ["tq2_0", "i2_s"])
def test_llama_file_holds_permuted_qk_and_reader_undoes_it(ckpt, gfile, fmt):
    path = gfile("llama", fmt)
    f = mg.GGUFFile(path)
    hf = minibit.load(ckpt("llama"))
    g = minibit.load(path)
    hd = SIZES["hidden"] // SIZES["heads"]
    for field, g_name, nh in (("q", "attn_q", SIZES["heads"]), ("k", "attn_k", SIZES["kv_heads"]),
                              ("v", "attn_v", None)):
        codes, scale = formats.unpack_codes(getattr(hf.transformer.layers[0], field).packed)
        stored = codes if nh is None else \
            codes.reshape(nh, 2, hd // 2, -1).swapaxes(1, 2).reshape(codes.shape)
        want = formats.pack_codes(fmt, stored, scale).data
        assert f.raw(f"blk.0.{g_name}.weight").tobytes() == np.asarray(want).tobytes()
        back, _ = formats.unpack_codes(getattr(g.transformer.layers[0], field).packed)
        np.testing.assert_array_equal(back, codes)


# ---------------------------------------------------------------------------- tokenizer

TEXTS = ["Hello world! It's 2024, isn't it?", "", " leading space and  two", "line\n\nbreaks\ttab",
         "naïve café — ünïcödé 日本語 🙂", "12345678 + 9 = ?", "<|eot_id|>User: hi</s>",
         "don't STOP'LL 'S we've"]


def _llama3_tokenizer_dir(ckpt_dir, out_dir):
    """A copy of ckpt_dir with a trained Llama-3-style byte-level BPE tokenizer.json (merges,
    the Llama-3 split regex, ignore_merges, a BOS post-processor) and config ids to match."""
    import shutil

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    shutil.copytree(ckpt_dir, out_dir, dirs_exist_ok=True)
    tk = Tokenizer(models.BPE(ignore_merges=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(mg.LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog", "It's what they're doing, isn't it?",
              "hello hello world world there their the then", "1234 5678 2024 numbers"] * 20
    trainer = trainers.BpeTrainer(vocab_size=290, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    tk.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
    bos, eos = tk.token_to_id("<|begin_of_text|>"), tk.token_to_id("<|end_of_text|>")
    assert tk.get_vocab_size() <= SIZES["vocab"]
    tk.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                      special_tokens=[("<|begin_of_text|>", bos)])
    tk.save(os.path.join(out_dir, "tokenizer.json"))
    cfg_path = os.path.join(out_dir, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update(bos_token_id=bos, eos_token_id=eos)
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    return out_dir


@pytest.mark.parametrize("kind", ["byte-level gpt-2", "llama-bpe with merges"])
def test_tokenizer_round_trips(ckpt, tmp_path, kind):
    d = ckpt("bitnet")
    if kind.startswith("llama"):
        d = _llama3_tokenizer_dir(d, str(tmp_path / "l3"))
    hf = minibit.load(d)
    p = str(tmp_path / "t.gguf")
    mg.save_gguf(hf, p, progress=False)
    f = mg.GGUFFile(p)
    assert f.fields["tokenizer.ggml.pre"] == ("gpt-2" if kind.startswith("byte") else "llama-bpe")
    if kind.startswith("llama"):
        assert len(f.fields["tokenizer.ggml.merges"]) > 0
        assert f.fields["tokenizer.ggml.eot_token_id"] == hf.tokenizer.token_to_id("<|eot_id|>")
    g = minibit.load(p)
    a, b = hf.tokenizer, g.tokenizer
    assert a.bos_id == b.bos_id and a.eos_ids[0] == b.eos_ids[0]
    for text in TEXTS:
        ids = a.encode(text)
        assert b.encode(text) == ids, text
        assert b.encode(text, bos=False) == a.encode(text, bos=False), text
        assert b.decode(ids) == a.decode(ids)
        assert b.decode(ids, skip_special=False) == a.decode(ids, skip_special=False)
    assert g.chat_template == hf.chat_template and g.chat_template


def _spm_meta():
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + \
        ["\u2581", "h", "e", "l", "o", "w", "r", "d", "\u2581h", "ll", "\u2581he", "\u2581hell",
         "\u2581hello", "\u2581w", "or", "\u2581wor", "\u2581world", "\u2581hel", "ld"]
    types = [2, 3, 3] + [6] * 256 + [1] * 19
    scores = [0.0] * 259 + [-100.0] * 8 + [-1.0, -2.0, -3.0, -5.0, -6.0, -7.0, -8.0, -9.0,
                                           -10.0, -4.0, -8.5]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": pieces,
            "tokenizer.ggml.token_type": np.array(types, np.int32),
            "tokenizer.ggml.scores": np.array(scores, np.float32),
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}
    return meta


def test_sentencepiece_vocab_from_gguf_metadata():
    """A 'llama' (SentencePiece) vocabulary: merges rebuilt from the scores."""
    meta = _spm_meta()
    tok = mg.read_tokenizer(meta)
    ids = tok.encode("hello world")
    assert [tok.id_to_token(i) for i in ids] == ["<s>", "\u2581hello", "\u2581world"]
    assert tok.decode(ids) == "hello world"
    assert tok.decode(tok.encode("hé")) == "hé"                    # é through byte fallback
    with pytest.raises(FormatError):
        mg.read_tokenizer({**meta, "tokenizer.ggml.model": "rwkv"})


# ---------------------------------------------------------------------------- damaged files

def _s(text) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def _gguf_bytes(kvs=(), tensors=(), version=3, align=32, data=b"", n_tensors=None, n_kv=None):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                len(kvs) if n_kv is None else n_kv)
    for key, vtype, payload in kvs:
        out += _s(key) + struct.pack("<I", vtype) + payload
    for name, ne, typ, off in tensors:
        out += _s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", typ, off)
    return out + b"\0" * (-len(out) % align) + data


GOOD_T = [("w", (4,), 0, 0)]
DAMAGED = {
    "bad magic": b"GGUX" + _gguf_bytes(tensors=GOOD_T, data=bytes(16))[4:],
    "version 1": _gguf_bytes(version=1),
    "big-endian": b"GGUF" + struct.pack(">IQQ", 3, 0, 0),
    "lying tensor count": _gguf_bytes(n_tensors=1 << 60),
    "lying kv count": _gguf_bytes(n_kv=1 << 40),
    "lying string length": b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40) + b"k" * 40,
    "lying array count": _gguf_bytes(kvs=[("a", 9, struct.pack("<IQ", 4, 1 << 40) + bytes(64))]),
    "lying string array count": _gguf_bytes(kvs=[("a", 9, struct.pack("<IQ", 8, 1 << 50) + bytes(64))]),
    "lying string in array": _gguf_bytes(kvs=[("a", 9, struct.pack("<IQ", 8, 2) + _s("x") +
                                                struct.pack("<Q", 1 << 33))]),
    "nested array": _gguf_bytes(kvs=[("a", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 4, 0))]),
    "unknown value type": _gguf_bytes(kvs=[("a", 13, bytes(8))]),
    "bad bool": _gguf_bytes(kvs=[("a", 7, b"\x07")]),
    "bad utf-8 key": _gguf_bytes(kvs=[(b"\xff\xfe", 4, bytes(4))]),
    "duplicate key": _gguf_bytes(kvs=[("a", 4, bytes(4)), ("a", 4, bytes(4))]),
    "alignment not a power of two": _gguf_bytes(kvs=[("general.alignment", 4, struct.pack("<I", 24))]),
    "huge n_dims": _gguf_bytes(tensors=[("w", (1,) * 5, 0, 0)], data=bytes(64)),
    "n_dims 1000": b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + _s("w") + struct.pack("<I", 1000) + bytes(64),
    "huge dimension": _gguf_bytes(tensors=[("w", (1 << 40, 1 << 40), 0, 0)], data=bytes(64)),
    "tensor offset past EOF": _gguf_bytes(tensors=[("w", (4,), 0, 1 << 20)], data=bytes(16)),
    "tensor data past EOF": _gguf_bytes(tensors=[("w", (8,), 0, 0)], data=bytes(16)),
    "misaligned offset": _gguf_bytes(tensors=[("w", (1,), 0, 3)], data=bytes(64)),
    "overlapping tensors": _gguf_bytes(tensors=[("a", (8,), 0, 0), ("b", (8,), 0, 0)], data=bytes(64)),
    "duplicate tensor": _gguf_bytes(tensors=[("a", (1,), 0, 0), ("a", (1,), 0, 32)], data=bytes(64)),
    "unknown type id 37": _gguf_bytes(tensors=[("w", (4,), 37, 0)], data=bytes(64)),
    "unknown type id 1000": _gguf_bytes(tensors=[("w", (4,), 1000, 0)], data=bytes(64)),
    "TQ2_0 row not a block multiple": _gguf_bytes(tensors=[("w", (100,), 35, 0)], data=bytes(128)),
    "TL1 without scale tensor": _gguf_bytes(tensors=[("w", (8, 32), 38, 0)], data=bytes(64)),
    "I2_S past EOF": _gguf_bytes(tensors=[("w", (128, 4), 36, 0)], data=bytes(128)),
}


def test_minimal_file_parses(tmp_path):
    p = tmp_path / "ok.gguf"
    p.write_bytes(_gguf_bytes(kvs=[("general.architecture", 8, _s("bitnet"))], tensors=GOOD_T,
                              data=np.arange(4, dtype="<f4").tobytes()))
    f = mg.GGUFFile(str(p))
    assert f.fields["general.architecture"] == "bitnet"
    np.testing.assert_array_equal(f.view("w"), np.arange(4, dtype=np.float32))
    with pytest.raises(FormatError, match="token_embd|embedding_length"):
        mg.load_gguf(str(p))                  # parses, but it is no model


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_file_raises_without_allocating(tmp_path, case):
    p = tmp_path / "bad.gguf"
    p.write_bytes(DAMAGED[case])
    tracemalloc.start()
    try:
        with pytest.raises(FormatError):
            mg.GGUFFile(str(p))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{case}: {peak} bytes allocated while rejecting the file"


def test_truncated_real_file_raises(gfile, tmp_path):
    data = open(gfile("bitnet", "tq2_0"), "rb").read()
    for n in (10, 30, 200, len(data) // 3, len(data) - 1):
        p = tmp_path / f"cut{n}.gguf"
        p.write_bytes(data[:n])
        with pytest.raises(FormatError):
            mg.load_gguf(str(p))


def test_corrupt_i2_s_code_raises(gfile, tmp_path):
    data = bytearray(open(gfile("bitnet", "i2_s"), "rb").read())
    f = mg.GGUFFile(gfile("bitnet", "i2_s"))
    data[f.info("blk.0.attn_v.weight").offset + 5] = 0xFF          # code 3 in every slot
    p = tmp_path / "bad.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="code 3"):
        mg.load_gguf(str(p))


# ---------------------------------------------------------------------------- CLI helpers

def test_main_convert_and_inspect(ckpt, tmp_path, capsys):
    out = str(tmp_path / "c.gguf")
    from minibit.cli import run_command
    assert run_command("convert", [ckpt("bitnet-b1.58"), out, "--to", "i2_s", "--no-progress",
                                   "--model-name", "tiny"]) == 0
    lines = mg.inspect_lines(out)
    text = "\n".join(lines)
    assert "general.name (STRING) = 'tiny'" in text
    assert "general.architecture (STRING) = 'bitnet-b1.58'" in text
    assert any(ln.startswith("blk.0.attn_q.weight") and " I2_S " in ln for ln in lines)
    assert ("blk.0.attn_q.weight", "I2_S", (256, 256), 256 * 256 // 4 + 32) in mg.tensor_rows(out)
    with pytest.raises(FormatError):
        mg.save_gguf(minibit.load(out), str(tmp_path / "x.gguf"), "q4_0", progress=False)


# llama.cpp itself runs minibit's TQ1_0/TQ2_0 files in tests/test_peers.py (the engine built
# from llama-cpp-python's sdist, logits compared bit for bit under the llama.cpp profile).


def test_sentencepiece_tokenizer_round_trips(ckpt, tmp_path):
    """A SentencePiece-style tokenizer.json (1bitLLM's kind) is written as a 'llama' vocab
    (tokens, types, scores) and reads back encoding identically."""
    import shutil

    d = str(tmp_path / "spm")
    shutil.copytree(ckpt("bitnet"), d)
    mg.read_tokenizer(_spm_meta())._tk.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update(bos_token_id=1, eos_token_id=2)
    with open(os.path.join(d, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    hf = minibit.load(d)
    p = str(tmp_path / "spm.gguf")
    mg.save_gguf(hf, p, progress=False)
    f = mg.GGUFFile(p)
    assert f.fields["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.merges" not in f.fields
    assert f.fields["tokenizer.ggml.add_space_prefix"] is True
    assert f.fields["tokenizer.ggml.token_type"][3] == 6              # <0x00> is a BYTE token
    g = minibit.load(p)
    for text in TEXTS + ["hello world", "hell o wor ld", "  hello"]:
        assert g.tokenizer.encode(text) == hf.tokenizer.encode(text), text
        ids = hf.tokenizer.encode(text)
        assert g.tokenizer.decode(ids) == hf.tokenizer.decode(ids)


# ---------------------------------------------------------------------------- other tensor types

def _rewrite(src, dst, replace):
    """Copy the GGUF file ``src`` to ``dst`` through gguf-py's writer, replacing tensors:
    {name: (array, raw_dtype or None)}.  Only for files of gguf-py-known types (TQ files)."""
    f = mg.GGUFFile(src)
    VT = gguf.GGUFValueType
    w = mg.new_writer(dst, f.fields["general.architecture"])
    for k, v in f.fields.items():
        t = f.field_types[k]
        if k == "general.architecture":
            continue
        if t.startswith("ARRAY"):
            vals = v.tolist() if isinstance(v, np.ndarray) else list(v)
            w.add_key_value(k, vals, VT.ARRAY, sub_type=VT[t[6:-1]])
        else:
            w.add_key_value(k, v, VT[t])
    for name, t in f.tensors.items():
        if name in replace:
            arr, rd = replace[name]
            w.add_tensor(name, arr, raw_dtype=rd)
        elif t.type_name in ("F32", "F16"):
            w.add_tensor(name, np.ascontiguousarray(f.view(name)))
        else:
            w.add_tensor(name, f.raw(name).reshape(t.shape[0], -1),
                         raw_dtype=gguf.GGMLQuantizationType(t.type_id))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.mark.parametrize("qt", ["F32", "BF16", "Q8_0", "Q4_0", "Q6_K"])
def test_embedding_types(gfile, tmp_path, qt):
    src = gfile("bitnet", "tq2_0")
    e = mg.GGUFFile(src).float32("token_embd.weight")
    t = gguf.GGMLQuantizationType[qt]
    if qt == "Q6_K":      # gguf-py dequantizes Q6_K but cannot quantize it: random blocks
        rng = np.random.default_rng(3)
        blob = rng.integers(0, 256, (e.shape[0], e.shape[1] // 256, 210), dtype=np.uint8)
        blob[..., 208:] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)  # d, last in block
        blob = blob.reshape(e.shape[0], -1)
    else:
        blob = e if qt == "F32" else gguf.quants.quantize(e, t)
    dst = _rewrite(src, str(tmp_path / f"{qt}.gguf"),
                   {"token_embd.weight": (blob, None if qt == "F32" else t)})
    g = minibit.load(dst)
    want = e if qt == "F32" else gguf.quants.dequantize(blob, t)
    tr = g.transformer
    assert tr.embed_dtype == ("BF16" if qt == "BF16" else "F32")
    np.testing.assert_array_equal(tr.embed_tokens(np.arange(SIZES["vocab"])), want)
    if qt == "F32":        # the same values; (an engine multiplies an F32 head in F32, not
        np.testing.assert_array_equal(                   # F16: the engine profiles differ)
            minibit.load(dst, profile="hf").logits(IDS), minibit.load(src, profile="hf").logits(IDS))


def test_float_projections_are_ternarized_exactly(gfile, tmp_path):
    """F16 projections holding codes * scale (a converter's --outtype f16 file) load as the
    same codes and scale."""
    src = gfile("bitnet-b1.58", "tq2_0")
    m = minibit.load(src)
    rep = {}
    want = {}
    for i, L in enumerate(m.transformer.layers):
        for g_name, field in mg.PROJ.items():
            codes, d = formats.unpack_codes(getattr(L, field).packed)       # d [rows, nb] fp16 values
            s = np.float32(np.unique(d)[0])
            rep[f"blk.{i}.{g_name}.weight"] = ((codes * s).astype(np.float16), None)
            want[(i, field)] = (codes, s)
    g = minibit.load(_rewrite(src, str(tmp_path / "f16.gguf"), rep))
    assert g.profile == "bitnet.cpp"
    for (i, field), (codes, s) in want.items():
        p = getattr(g.transformer.layers[i], field).packed
        c2, s2 = formats.unpack_codes(p)
        assert p.fmt == "i2_s" and s2 == s
        np.testing.assert_array_equal(c2, codes)
