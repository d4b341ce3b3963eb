"""minibit.oracle: dumps, compare, kernel vectors, perplexity, and their CLI entry points.

Every expected value is recomputed here independently of the code under test where it can
be (integer products from the codes, the int16 lanes, the NLL from Model.logits), and the
docs' plain-NumPy vector reader is run as written.
"""

import json
import math
import os
import re
import shutil

import numpy as np
import pytest

import minibit
from minibit import FormatError, _backend, formats, kernels
from minibit.formats import Packed
from minibit.io.synthetic import write_checkpoint
from minibit.cli import run_command
from minibit.oracle import compare, dump, perplexity, vectors
from minibit.oracle.dump import entry_order_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "Hello, oracle!"
GGUF = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "gate": "ffn_gate",
        "up": "ffn_up", "down": "ffn_down"}
BACKENDS = ["numpy", "cython"]


def _backend_or_skip(which):
    if which == "cython" and _backend.fast_module("quant") is None:
        pytest.skip("Cython twins not built")
    return _backend.use(which)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # hidden, heads*head_dim and intermediate are multiples of 128: both hf and bitnet.cpp run
    return write_checkpoint(str(tmp_path_factory.mktemp("ck") / "m"), arch="bitnet-b1.58",
                            hidden=128, intermediate=256, heads=4, kv_heads=2, layers=2, seed=3)


@pytest.fixture(scope="module")
def model(ckpt):
    return minibit.load(ckpt)


@pytest.fixture(scope="module")
def dump_a(model, tmp_path_factory):
    d = str(tmp_path_factory.mktemp("dumps") / "a")
    return d, dump(model, PROMPT, d)


def _expected_names(cfg):
    names = ["inp_embd"]
    for i in range(cfg.num_layers):
        lin = lambda g: [f"{g}.q-{i}", f"{g}.s-{i}", f"{g}.acc-{i}"]     # profile hf
        names += [f"attn_norm-{i}", *lin("attn_q"), *lin("attn_k"), *lin("attn_v"),
                  f"Qcur-{i}", f"Kcur-{i}", f"Vcur-{i}", f"Qcur_rope-{i}", f"Kcur_rope-{i}",
                  f"kqv_out-{i}", f"attn_sub_norm-{i}", *lin("attn_output"), f"attn_out-{i}",
                  f"ffn_inp-{i}", f"ffn_norm-{i}", *lin("ffn_gate"), f"ffn_gate-{i}",
                  *lin("ffn_up"), f"ffn_up-{i}", f"ffn_gate_par-{i}", f"ffn_sub_norm-{i}",
                  *lin("ffn_down"), f"ffn_out-{i}", f"l_out-{i}"]
    return names + ["result_norm", "result_output"]


def _load(d, name):
    return np.load(os.path.join(d, name + ".npy"))


# ---- dump ----------------------------------------------------------------------------------

def test_dump_has_every_entry_in_forward_order(model, dump_a):
    d, man = dump_a
    cfg = model.config
    ids = model.tokenizer.encode(PROMPT)
    T, H, G, D = len(ids), cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    names = [e["name"] for e in man["entries"]]
    assert names == _expected_names(cfg)
    assert sorted(names, key=entry_order_key) == names          # the no-manifest ordering
    assert man["token_ids"] == ids and man["profile"] == "hf" and man["prompt"] == PROMPT
    on_disk = json.load(open(os.path.join(d, "manifest.json")))
    assert on_disk == json.loads(json.dumps(man))
    by = {e["name"]: e for e in man["entries"]}
    want = {"inp_embd": ((T, cfg.hidden_size), "float32"), "Qcur-0": ((T, H, D), "float32"),
            "Kcur_rope-1": ((T, G, D), "float32"), "kqv_out-0": ((T, H * D), "float32"),
            "attn_q.q-0": ((T, cfg.hidden_size), "int8"), "attn_q.s-0": ((T,), "float32"),
            "ffn_down.q-1": ((T, cfg.intermediate_size), "int8"),
            "ffn_down.acc-1": ((T, cfg.hidden_size), "int32"),
            "attn_k.acc-0": ((T, G * D), "int32"),
            "ffn_gate_par-0": ((T, cfg.intermediate_size), "float32"),
            "result_output": ((T, cfg.vocab_size), "float32")}
    for name, (shape, dtype) in want.items():
        a = _load(d, name)
        assert (a.shape, str(a.dtype)) == (shape, dtype), name
        assert (tuple(by[name]["shape"]), by[name]["dtype"]) == (shape, dtype), name
    for e in man["entries"]:                                     # manifest matches the files
        a = np.load(os.path.join(d, e["file"]))
        assert list(a.shape) == e["shape"] and str(a.dtype) == e["dtype"], e["name"]
    assert by["attn_norm-1"]["llama_cpp"] == "attn_norm-1"
    assert by["attn_norm-1"]["hf"] == "model.layers.1.input_layernorm"
    assert by["ffn_out-0"]["llama_cpp"] == "ffn_down-0"
    assert (by["attn_q.q-0"]["hf"], by["attn_q.q-0"]["hf_io"]) == ("model.layers.0.self_attn.q_proj", "input")
    assert (by["kqv_out-1"]["hf"], by["kqv_out-1"]["hf_io"]) == ("model.layers.1.self_attn.attn_sub_norm", "input")
    assert by["Qcur_rope-0"]["llama_cpp"] == "Qcur-0" and by["Qcur_rope-0"]["hf"] is None


def test_dump_logits_and_integers_are_the_models(model, dump_a):
    d, man = dump_a
    ids = man["token_ids"]
    logits = model.logits(ids)
    assert _load(d, "result_output").tobytes() == logits.tobytes()
    L = model.transformer.layers[1]
    assert type(L.q).__name__ == "BitLinear"                     # the model was not modified
    for key, src in (("q", "attn_norm-1"), ("down", "ffn_sub_norm-1")):
        codes, scale = formats.unpack_codes(getattr(L, key).packed)
        q, s = _load(d, f"{GGUF[key]}.q-1"), _load(d, f"{GGUF[key]}.s-1")
        q_ref, s_ref = minibit.quant.quantize_act_hf(_load(d, src))
        assert np.array_equal(q, q_ref) and np.array_equal(s, s_ref)
        acc = q.astype(np.int32) @ codes.astype(np.int32).T      # independent integer product
        assert np.array_equal(_load(d, f"{GGUF[key]}.acc-1"), acc)
        want = _load(d, "Qcur-1").reshape(acc.shape) if key == "q" else _load(d, "ffn_out-1")
        exact = acc.astype(np.float32) / s[:, None] * scale      # (float)R / s * scale
        assert getattr(L, key).packed.hf_linear == "offline"
        # hf on an "autobitlinear" weight: transformers' F.linear(q / s, codes) in MKL's
        # order, times weight_scale -- within float rounding of the integer product
        from minibit.kernels.float_ternary import mkl_linear
        xq = q.astype(np.float32) / s[:, None]
        out = mkl_linear(xq, getattr(L, key).packed.data, *codes.shape) * scale
        assert out.tobytes() == want.tobytes()
        assert np.allclose(out, exact, rtol=1e-5, atol=1e-6 * np.abs(exact).max())
    g, u = _load(d, "ffn_gate-0"), _load(d, "ffn_up-0")
    r = np.maximum(g, np.float32(0))
    assert np.array_equal(_load(d, "ffn_gate_par-0"), r * r * u)  # relu^2(gate) * up


def test_dump_under_another_profile_equals_that_models_logits(ckpt, model, dump_a, tmp_path):
    d, man = dump_a
    mb = dump(model, man["token_ids"], str(tmp_path / "b"), profile="bitnet.cpp")
    assert model.profile == "hf" and mb["profile"] == "bitnet.cpp" and mb["prompt"] is None
    m2 = minibit.load(ckpt, profile="bitnet.cpp")
    assert _load(str(tmp_path / "b"), "result_output").tobytes() == m2.logits(man["token_ids"]).tobytes()
    # the bitnet.cpp profile runs the whole block in ggml's order (minibit.model.ggml): the
    # dumps part at the first RMSNorm (ggml sums squares in double), by float rounding only
    rep = compare(d, str(tmp_path / "b"), out=None)
    assert rep.first_diverging == "attn_norm-0", rep.table(only_diff=True)
    a, b = _load(d, "attn_norm-0"), _load(str(tmp_path / "b"), "attn_norm-0")
    assert np.abs(a - b).max() <= 4 * np.finfo(np.float32).eps * np.abs(a).max()


def test_dump_twice_compares_with_zero_diff(model, dump_a, tmp_path, capsys):
    d, man = dump_a
    d2 = str(tmp_path / "again")
    dump(model, PROMPT, d2)
    rep = compare(d, d2)                                         # prints the table
    printed = capsys.readouterr().out
    assert "result_output" in printed and "identical" in printed
    assert rep.ok and rep.first_diverging is None and not rep.only_in_a and not rep.only_in_b
    assert len(rep.rows) == len(man["entries"])
    assert all(r.max_abs == 0 and r.rel_err == 0 and r.n_diff == 0 for r in rep.rows)
    assert all(r.cosine == pytest.approx(1.0) for r in rep.rows)
    assert rep.logits.top1_agree == [True] * len(man["token_ids"]) and rep.logits.kl_max == 0
    assert "all" in rep.table() and "identical" in rep.summary()


def test_compare_finds_the_first_diverging_tensor(ckpt, model, dump_a, tmp_path):
    from safetensors.numpy import load_file, save_file

    d, man = dump_a
    other = str(tmp_path / "ck2")
    shutil.copytree(ckpt, other)
    st = os.path.join(other, "model.safetensors")
    t = load_file(st)
    t["model.layers.1.post_attention_layernorm.weight"] = \
        t["model.layers.1.post_attention_layernorm.weight"] * np.float32(1.01)
    save_file(t, st, metadata={"format": "pt"})
    db = str(tmp_path / "b")
    dump(minibit.load(other), man["token_ids"], db)
    rep = compare(d, db, out=None)
    assert rep.first_diverging == "ffn_norm-1" and not rep.ok
    names = [r.name for r in rep.rows]
    k = names.index("ffn_norm-1")
    assert all(r.identical for r in rep.rows[:k]) and not rep.rows[k].identical
    assert rep.rows[k].rel_err == pytest.approx(0.01, rel=1e-3)
    assert rep.logits is not None and rep.logits.kl_max > 0
    assert "<- first" in rep.table()
    # with a tolerance above the 1 % change nothing diverges before the logits drift
    loose = compare(d, db, fail_above=0.5, out=None)
    assert loose.first_diverging is None and loose.ok
    tight = compare(d, db, fail_above=1e-3, out=None)
    assert tight.first_diverging == "ffn_norm-1"


def test_compare_accepts_another_engines_layout(dump_a, tmp_path):
    """No manifest, llama.cpp names, flattened heads, last-position-only logits."""
    d, man = dump_a
    f = tmp_path / "engine"
    f.mkdir()
    np.save(f / "attn_norm-0.npy", _load(d, "attn_norm-0"))
    q = _load(d, "Qcur-0")
    np.save(f / "Qcur-0.npy", q.reshape(q.shape[0], -1))         # [T, H*D]
    np.save(f / "ffn_down-1.npy", _load(d, "ffn_out-1"))          # llama.cpp's name
    np.save(f / "result_output.npy", _load(d, "result_output")[-1:])
    rep = compare(d, str(f), out=None)
    assert [r.name for r in rep.rows] == ["attn_norm-0", "Qcur-0", "ffn_out-1", "result_output"]
    assert rep.ok
    assert rep.row("Qcur-0").note == "reshaped"
    assert rep.row("result_output").note == "last position"
    assert len(rep.logits.top1_agree) == 1
    np.save(f / "l_out-0.npy", np.zeros((3, 3), np.float32))       # a shape that cannot match
    rep = compare(d, str(f), out=None)
    assert rep.first_diverging == "l_out-0" and rep.row("l_out-0").note.startswith("shape")


def test_compare_rejects_bad_input(dump_a, tmp_path):
    d, man = dump_a
    with pytest.raises(FormatError):
        compare(d, str(tmp_path / "missing"), out=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError):
        compare(d, str(tmp_path / "empty"), out=None)
    other = tmp_path / "other_ids"
    shutil.copytree(d, other)
    m = json.load(open(other / "manifest.json"))
    m["token_ids"] = m["token_ids"][:-1] + [m["token_ids"][-1] ^ 1]
    json.dump(m, open(other / "manifest.json", "w"))
    with pytest.raises(FormatError, match="different token ids"):
        compare(d, str(other), out=None)
    os.remove(other / "inp_embd.npy")
    with pytest.raises(FormatError, match="missing"):
        compare(str(other), str(other), out=None)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    np.save(nothing / "unrelated.npy", np.zeros(3, np.float32))
    with pytest.raises(FormatError, match="in common"):
        compare(d, str(nothing), out=None)
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "manifest.json").write_text("{not json")
    with pytest.raises(FormatError):
        compare(d, str(tmp_path / "badjson"), out=None)
    with pytest.raises(FormatError):
        compare(d, d, fail_above=-1, out=None)


def test_dump_rejects_bad_input(model, tmp_path):
    with pytest.raises(FormatError):
        dump(model, [0, model.config.vocab_size], str(tmp_path / "x"))
    with pytest.raises(FormatError):
        dump(model, [], str(tmp_path / "x"))
    with pytest.raises(FormatError):
        dump(model, [1, 2], str(tmp_path / "x"), profile="nope")
    with pytest.raises(FormatError):
        dump(model, 3.5, str(tmp_path / "x"))


# ---- vectors -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vec_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("vectors"))
    vectors("all", d)
    return d


def _lanes(codes, q):
    """sum (w+1) q through 16 int16 lanes per 32 columns, wrapping per 4096-column group."""
    T, K = q.shape
    N = codes.shape[0]
    out = np.zeros((T, N), np.int64)
    for g in range(0, K, 4096):
        c = codes[:, g:g + 4096].astype(np.int64) + 1
        x = q[:, g:g + 4096].astype(np.int64)
        n = c.shape[1] // 32
        lane = np.einsum("tjle,njle->tnl", x.reshape(T, n, 16, 2), c.reshape(N, n, 16, 2))
        out += ((lane + 32768) % 65536 - 32768).sum(axis=2)
    return out


def _packed(case, z):
    return Packed(case["format"], (case["rows"], case["cols"]), z["data"],
                  z["scale"] if "scale" in z.files else None, dict(case["params"]))


@pytest.mark.parametrize("which", BACKENDS)
def test_vectors_reload_and_match_every_kernel(vec_dir, which):
    index = json.load(open(os.path.join(vec_dir, "index.json")))
    cases = index["cases"]
    assert {c["format"] for c in cases} == set(formats.FORMATS)
    tags = index["profile_tags"]
    seen_wrap = set()
    with _backend_or_skip(which):
        for case in cases:
            z = np.load(os.path.join(vec_dir, case["file"]))
            assert {k: [str(z[k].dtype), list(z[k].shape)] for k in z.files} == case["arrays"]
            fmt, (N, K) = case["format"], (case["rows"], case["cols"])
            p = _packed(case, z)
            codes, w_scale = formats.unpack_codes(p)
            assert np.array_equal(codes, z["codes"]) and np.array_equal(w_scale, z["w_scale"])
            assert set(case["profiles"]) == set(kernels.profiles(fmt))
            for prof in case["profiles"]:
                t = tags[prof] + "."
                q = z[t + "q"]
                T = q.shape[0]
                what = f"{case['file']} {prof}"
                # the integer part, recomputed from the codes
                c32, q32 = codes.astype(np.int32), q.astype(np.int32)
                if fmt in ("tq1_0", "tq2_0"):          # llama.cpp and the 2024 fork: Q8_K
                    nb = K // 256
                    sumi = np.einsum("tbk,nbk->tnb", q32.reshape(T, nb, 256), c32.reshape(N, nb, 256))
                    assert np.array_equal(z[t + "acc"], sumi), what
                    bs = q32.reshape(T, nb, 16, 16).sum(axis=3)
                    assert np.array_equal(z[t + "bsums"], bs.astype(np.int16)), what
                elif prof == "bitnet.cpp" and fmt in ("i2_s", "hf_packed"):
                    lanes = _lanes(codes, q)
                    sums = z[t + "sums"]
                    assert np.array_equal(sums, q32.sum(axis=1)), what
                    assert np.array_equal(z[t + "acc_codes"], lanes), what
                    assert np.array_equal(z[t + "acc"], lanes - sums[:, None]), what
                    assert np.array_equal(z[t + "acc_exact"], q32 @ c32.T), what
                    wraps = not np.array_equal(lanes - sums[:, None], q32 @ c32.T)
                    assert wraps == case["int16_wrap"], what
                    if wraps:
                        seen_wrap.add(case["case"])
                        assert z[t + "y"].tobytes() != z[t + "y_exact"].tobytes()
                        # the wide-lane answer is the hf profile's exact one
                        assert z[t + "y_exact"].tobytes() == z["hf.y"].tobytes(), what
                    else:
                        assert z[t + "y_exact"].tobytes() == z[t + "y"].tobytes(), what
                else:
                    assert np.array_equal(z[t + "acc"], q32 @ c32.T), what
                # the float output, through every kernel
                if case["input"] == "x":
                    x = z["x"]
                    acts = kernels.quantize_acts(x, fmt, prof)
                    for part, v in acts.items():
                        assert np.array_equal(v, z[t + part], equal_nan=True), (what, part)
                    for k in kernels.available(fmt):
                        with np.errstate(invalid="ignore", divide="ignore"):
                            y = kernels.linear(x, p, profile=prof, kernel=k)
                        assert y.tobytes() == z[t + "y"].tobytes(), (what, k)
                    if prof == "bitnet.cpp" and fmt in ("i2_s", "hf_packed"):
                        assert kernels.int16_lane_overflow(x, p).wraps == case["int16_wrap"], what
                else:
                    import importlib
                    acts = {part: z[t + part] for part in ("q", "s", "sums", "d") if t + part in z.files}
                    for k in kernels.available(fmt):
                        mod = importlib.import_module(kernels.KERNELS[k][0])
                        y = mod.apply(p, prof, acts)
                        assert np.ascontiguousarray(y).tobytes() == z[t + "y"].tobytes(), (what, k)
    assert seen_wrap == {"int16_wrap", "int16_boundary"}


def test_vectors_edge_cases_present(vec_dir):
    index = json.load(open(os.path.join(vec_dir, "index.json")))
    by = {(c["format"], c["case"]): c for c in index["cases"]}
    for fmt in formats.FORMATS:
        for case in ("random", "minimal", "odd", "zero_rows", "zero_weight", "zero_acts",
                     "saturation", "ties", "int8_extremes"):
            assert (fmt, case) in by, (fmt, case)
    for fmt in ("i2_s", "hf_packed"):
        assert by[(fmt, "int16_wrap")]["int16_wrap"] and by[(fmt, "int16_boundary")]["int16_wrap"]
        z = np.load(os.path.join(vec_dir, f"{fmt}-int16_boundary.npz"))
        assert z["bitnet_cpp.acc_codes"][0, 1] == 16 * 32767               # row 1: every lane at the edge
        assert np.array_equal(z["bitnet_cpp.acc"][0, 1:], z["bitnet_cpp.acc_exact"][0, 1:])
        assert by[(fmt, "random")]["int16_wrap"] is False
    z = np.load(os.path.join(vec_dir, "i2_s-ties.npz"))
    xs = z["x"] * z["hf.s"][:, None]
    tie = xs != np.floor(xs)
    assert tie.sum() > 100 and np.all(z["hf.q"][tie].astype(np.int32) % 2 == 0)   # half to even
    z = np.load(os.path.join(vec_dir, "i2_s-int8_extremes.npz"))
    assert (z["hf.q"] == -128).any() and (z["hf.q"] == 127).any()
    z = np.load(os.path.join(vec_dir, "tl1-zero_acts.npz"))
    assert np.isinf(z["bitnet_cpp.s"][1]) and not z["bitnet_cpp.y"][1].any()
    assert by[("tl1", "odd")]["params"]["bm"] == 64
    assert by[("tl2", "odd")]["params"]["BK"] < by[("tl2", "odd")]["cols"]   # triplets + pairs


def test_vectors_index_merges_and_is_deterministic(vec_dir, tmp_path):
    before = json.load(open(os.path.join(vec_dir, "index.json")))
    vectors("tl1", vec_dir)
    after = json.load(open(os.path.join(vec_dir, "index.json")))
    assert sorted(c["file"] for c in after["cases"]) == sorted(c["file"] for c in before["cases"])
    vectors("tl1", str(tmp_path))
    for c in json.load(open(tmp_path / "index.json"))["cases"]:
        a, b = np.load(tmp_path / c["file"]), np.load(os.path.join(vec_dir, c["file"]))
        assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a.files)
    with pytest.raises(FormatError):
        vectors("q4_0", str(tmp_path))


def test_docs_reader_example_runs_on_the_vectors(vec_dir, capsys):
    text = open(os.path.join(ROOT, "docs", "oracle.md"), encoding="utf-8").read()
    code = re.search(r"```python\n# oracle-reader-example\n(.*?)```", text, re.S).group(1)
    assert "minibit" not in code
    exec(compile(code, "docs/oracle.md", "exec"), {"VECTORS": vec_dir})
    assert "22 i2_s / tq2_0 cases agree" in capsys.readouterr().out


# ---- perplexity ----------------------------------------------------------------------------

TEXT = "A small text for perplexity: the quick brown fox jumps over the lazy dog. " * 2


def _nll_reference(model, ids, ctx, stride):
    """NLL of every token after the first, HF sliding-window style, from Model.logits."""
    total, n, scored_upto, begin = 0.0, 0, 1, 0
    while True:
        end = min(begin + ctx, len(ids))
        logits = model.logits(ids[begin:end]).astype(np.float64)
        for i in range(max(begin + 1, scored_upto), end):
            z = logits[i - 1 - begin]
            total += math.log(np.exp(z - z.max()).sum()) + z.max() - z[ids[i]]
            n += 1
        scored_upto = end
        if end >= len(ids):
            return total, n
        begin += stride


def test_perplexity_equals_exp_mean_nll(model):
    ids = model.tokenizer.encode(TEXT)
    r = perplexity(model, TEXT, ctx=32, progress=False)
    total, n = _nll_reference(model, ids, 32, 32)
    assert r.tokens_scored == n == len(ids) - r.windows            # each window's first is context
    assert r.ppl == pytest.approx(math.exp(total / n), rel=1e-12)
    # byte tokenizer: one byte per token, BOS first; the unscored window starts lose one byte each
    assert r.bytes_scored == len(TEXT.encode()) - (r.windows - 1)
    assert r.bits_per_byte == pytest.approx(total / math.log(2) / r.bytes_scored, rel=1e-12)
    s = perplexity(model, TEXT, ctx=32, stride=10, progress=False)
    total, n = _nll_reference(model, ids, 32, 10)
    assert s.tokens_scored == n == len(ids) - 1 and s.bytes_scored == len(TEXT.encode())
    assert s.ppl == pytest.approx(math.exp(total / n), rel=1e-12)


def test_perplexity_counts_multibyte_characters_once(model, tmp_path):
    text = "Ünïcödé ✓ — ok. " * 5
    p = tmp_path / "t.txt"
    p.write_text(text, encoding="utf-8")
    r = perplexity(model, p, ctx=8, progress=False)                  # a path is read as a file
    assert r.ppl == pytest.approx(perplexity(model, text, ctx=8, progress=False).ppl, rel=0)
    full = perplexity(model, text, ctx=8, stride=7, progress=False)   # every token scored
    assert full.bytes_scored == len(text.encode("utf-8"))
    assert 0 < r.bytes_scored < full.bytes_scored


def test_perplexity_rejects_bad_input(model, tmp_path):
    for kw in (dict(ctx=1), dict(ctx=8, stride=9), dict(ctx=8, stride=0), dict(ctx=2.5)):
        with pytest.raises(FormatError):
            perplexity(model, TEXT, progress=False, **kw)
    with pytest.raises(FormatError):
        perplexity(model, "", progress=False)
    import pathlib
    with pytest.raises(FormatError):
        perplexity(model, pathlib.Path(tmp_path / "missing.txt"), progress=False)


# ---- CLI entry points (minibit/cli/) ----------------------------------------------------------------------

def main_dump(argv):
    return run_command("dump", argv)


def main_compare(argv):
    return run_command("compare", argv)


def main_vectors(argv):
    return run_command("vectors", argv)


def main_perplexity(argv):
    return run_command("perplexity", argv)


def test_main_functions(ckpt, dump_a, tmp_path, capsys):
    d, man = dump_a
    out = str(tmp_path / "cli")
    assert main_dump([PROMPT, "--out", out, "--model", ckpt]) == 0
    assert "tensors" in capsys.readouterr().out
    assert main_compare([d, out]) == 0
    assert "identical" in capsys.readouterr().out
    ids = ",".join(str(i) for i in man["token_ids"])
    out2 = str(tmp_path / "cli2")
    assert main_dump(["--ids", ids, "--out", out2, "--model", ckpt, "--profile", "bitnet.cpp",
                      "--no-acc"]) == 0
    m2 = json.load(open(os.path.join(out2, "manifest.json")))
    assert m2["profile"] == "bitnet.cpp" and not any(".acc-" in e["name"] for e in m2["entries"])
    capsys.readouterr()
    # a perturbed copy: above a tight threshold -> exit 3, below a loose one -> 0
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    x = np.load(bad / "ffn_norm-1.npy")
    x[0, 0] += np.float32(1e-2) * np.abs(x).max()
    np.save(bad / "ffn_norm-1.npy", x)
    js = str(tmp_path / "rep.json")
    assert main_compare([d, str(bad), "--fail-above", "1e-6", "--json", js]) == 3
    text = capsys.readouterr().out
    assert "first diverging: ffn_norm-1" in text
    assert json.load(open(js))["first_diverging"] == "ffn_norm-1"
    assert main_compare([d, str(bad), "--fail-above", "0.5", "--only-diff"]) == 0
    with pytest.raises(FormatError):
        main_compare([d, str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as e:
        main_dump(["--out", out])                                     # neither prompt nor ids
    assert e.value.code == 2
    with pytest.raises(FormatError):
        main_dump(["--ids", "1,x", "--out", out, "--model", ckpt])
    vd = str(tmp_path / "vec")
    assert main_vectors(["--format", "tl2", "--out", vd]) == 0
    assert os.path.exists(os.path.join(vd, "tl2-random.npz"))
    with pytest.raises(SystemExit):
        main_vectors(["--format", "q4_0", "--out", vd])
    txt = tmp_path / "t.txt"
    txt.write_text(TEXT, encoding="utf-8")
    capsys.readouterr()
    assert main_perplexity([str(txt), "--ctx", "32", "--model", ckpt, "--no-progress"]) == 0
    assert "perplexity" in capsys.readouterr().out
    with pytest.raises(FormatError):
        main_perplexity([str(tmp_path / "missing.txt"), "--model", ckpt])
