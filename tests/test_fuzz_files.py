"""Damaged and hostile files: every case ends in a clean FormatError or a correct load.

Never a crash, a hang, a MemoryError, or a stray IndexError / KeyError / struct.error /
JSONDecodeError.  The case counts are fixed (not the profile's default) so the normal suite
always runs them: see FUZZ_CASES.
"""

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import minibit
from minibit.io.safetensors import SafetensorsFile
from minibit.io.synthetic import write_checkpoint

FUZZ_CASES = 700
fuzz = settings(max_examples=FUZZ_CASES, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(str(tmp_path_factory.mktemp("fz") / "m"), hidden=32, heads=2,
                            kv_heads=1, intermediate=64, layers=1, vocab=260, seed=0)


class Blob(bytes):
    """File bytes with a short repr, so a failing hypothesis case prints readably."""

    def __repr__(self):
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="module")
def st_bytes(ckpt):
    with open(os.path.join(ckpt, "model.safetensors"), "rb") as f:
        return Blob(f.read())


def _read_all(path):
    f = SafetensorsFile(path)
    try:
        for n in f.names:
            np.asarray(f.get(n)).sum()
    finally:
        f.close()


def _mutate(data: bytes, kind: str, pos: int, val: int) -> bytes:
    b = bytearray(data)
    hlen = struct.unpack("<Q", data[:8])[0]
    if kind == "truncate":
        return bytes(b[:pos % (len(b) + 1)])
    if kind == "flip_header":
        i = 8 + pos % max(1, hlen)
        b[i] ^= 1 << (val % 8)
        return bytes(b)
    if kind == "flip_any":
        i = pos % len(b)
        b[i] ^= 1 << (val % 8)
        return bytes(b)
    if kind == "header_len":
        b[:8] = struct.pack("<Q", val)
        return bytes(b)
    if kind == "json_edit":
        header = json.loads(data[8:8 + hlen])
        names = [k for k in header if k != "__metadata__"]
        name = names[pos % len(names)]
        field = ["dtype", "shape", "data_offsets"][val % 3]
        bad = [
            "Q9", [2 ** 62, 2 ** 62], [0, 2 ** 63], [-1, 4], [5, 3], ["a"], 1e300, None,
            [2 ** 31] * 8, [1] * 40, [0, 0], True,
        ][(pos // 3 + val) % 12]
        header[name][field] = bad
        raw = json.dumps(header).encode()
        return struct.pack("<Q", len(raw)) + raw + data[8 + hlen:]
    raise AssertionError(kind)


kinds = st.sampled_from(["truncate", "flip_header", "flip_any", "header_len", "json_edit"])


@fuzz
@given(kind=kinds, pos=st.integers(0, 2 ** 20), val=st.integers(0, 2 ** 64 - 1))
def test_safetensors_mutations(tmp_path_factory, st_bytes, kind, pos, val):
    path = str(tmp_path_factory.getbasetemp() / "fuzz.safetensors")
    with open(path, "wb") as f:
        f.write(_mutate(st_bytes, kind, pos, val))
    try:
        _read_all(path)
    except minibit.FormatError:
        pass


def _scratch_checkpoint(tmp_path_factory, ckpt, dirname, names):
    """The session's scratch directory dirname holding copies of the files names of the
    checkpoint ckpt (copied once); each example then writes the one file it damages."""
    d = tmp_path_factory.getbasetemp() / dirname
    d.mkdir(exist_ok=True)
    for name in names:
        target = d / name
        if not target.exists():
            target.write_bytes(open(os.path.join(ckpt, name), "rb").read())
    return d


@fuzz
@given(kind=st.sampled_from(["truncate", "flip_any", "json_edit"]), pos=st.integers(0, 2 ** 20),
       val=st.integers(0, 2 ** 64 - 1))
def test_model_load_with_damaged_weights(tmp_path_factory, ckpt, st_bytes, kind, pos, val):
    d = _scratch_checkpoint(tmp_path_factory, ckpt, "fuzzmodel", ("config.json", "tokenizer.json"))
    (d / "model.safetensors").write_bytes(_mutate(st_bytes, kind, pos, val))
    try:
        m = minibit.load(str(d))
    except minibit.FormatError:
        return
    out = m.logits([256, 1, 2])                 # a correct load computes
    assert out.shape == (3, 260)


config_values = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 40, 2 ** 40),
                          st.floats(allow_nan=True), st.text(max_size=8),
                          st.lists(st.integers(-5, 5), max_size=3), st.just({}))


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(["hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                            "vocab_size", "intermediate_size", "num_hidden_layers", "rope_theta",
                            "rms_norm_eps", "architectures", "quantization_config", "eos_token_id",
                            "hidden_act", "tie_word_embeddings", "rope_scaling", "model_type",
                            "max_position_embeddings", "bos_token_id"]),
       value=config_values)
def test_config_fields(tmp_path_factory, ckpt, key, value):
    d = _scratch_checkpoint(tmp_path_factory, ckpt, "fuzzcfg", ("model.safetensors", "tokenizer.json"))
    cfg = json.load(open(os.path.join(ckpt, "config.json")))
    cfg[key] = value
    (d / "config.json").write_text(json.dumps(cfg))
    try:
        m = minibit.load(str(d))
    except minibit.FormatError:
        return
    out = m.logits([1, 2])                      # a config that loads is a config that computes
    assert out.shape == (2, m.config.vocab_size) and np.isfinite(out).all()


def test_tokenizer_json_damage(tmp_path, ckpt):
    for i, text in enumerate(["{", "[]", '{"model": 5}', "\x00" * 10, json.dumps({"version": "1.0"})]):
        d = tmp_path / f"t{i}"
        d.mkdir()
        for name in ("model.safetensors", "config.json"):
            (d / name).write_bytes(open(os.path.join(ckpt, name), "rb").read())
        (d / "tokenizer.json").write_text(text)
        with pytest.raises(minibit.FormatError, match="tokenizer"):
            minibit.load(str(d))
