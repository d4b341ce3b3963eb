"""A pre-quantization twin of a ternary GGUF: the same file with every ternary projection
written as F32 values {-s, 0, +s} (codes times the tensor scale), the form bitnet.cpp's and
llama.cpp's converters hand to their quantizers (``llama-quantize model-f32.gguf out.gguf I2_S
1``).  The peers' own quantizers then write I2_S / TQ1_0 / TQ2_0 from it, and the tests check
that minibit reads back the very codes and scales it started from.

    python tools/peers/f32_twin.py model.i2_s.gguf model.tq2_0.gguf model.f32.gguf
"""

from __future__ import annotations

import sys

import numpy as np


def _writer_class():
    import gguf

    class Writer(gguf.GGUFWriter):
        """gguf-py refuses empty arrays; minibit's files hold one (tokenizer.ggml.merges of a
        byte-level vocabulary without merges), and llama.cpp requires the key."""

        def _pack_val(self, val, vtype, add_vtype, sub_type=None):
            if vtype == gguf.GGUFValueType.ARRAY and len(val) == 0:
                return ((self._pack("I", vtype) if add_vtype else b"")
                        + self._pack("I", sub_type or gguf.GGUFValueType.STRING) + self._pack("Q", 0))
            return super()._pack_val(val, vtype, add_vtype, sub_type)
    return Writer


def write_f32_twin(model, src: str, dst: str) -> dict:
    """Write dst: src's metadata and non-ternary tensors, and ``model``'s ternary projections
    as F32 (minibit's formats.decode of each, q/k permuted back for arch "llama").  src is a
    GGUF the ``gguf`` package reads (TQ1_0/TQ2_0; it has no I2_S type) written from the same
    model.  Returns {tensor name: float32 array} of the projections written."""
    import gguf

    import minibit
    from minibit.io.gguf import PROJ

    m = model
    _Writer = _writer_class()
    r = gguf.GGUFReader(src)
    arch = str(r.fields["general.architecture"].contents())
    w = _Writer(dst, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = gguf.GGUFValueType(f.types[0])
        if name == "general.file_type":
            w.add_key_value(name, 0, vtype)                    # LLAMA_FTYPE_ALL_F32
            continue
        sub = None
        if vtype == gguf.GGUFValueType.ARRAY:       # an empty array keeps no item type: the
            sub = gguf.GGUFValueType(f.types[1]) if len(f.types) > 1 else gguf.GGUFValueType.STRING
        w.add_key_value(name, f.contents(), vtype, sub)
    layers = m.transformer.layers
    written = {}
    for t in r.tensors:
        parts = t.name.split(".")
        if parts[0] == "blk" and parts[2] in PROJ and parts[-1] == "weight" and len(parts) == 4:
            p = getattr(layers[int(parts[1])], PROJ[parts[2]]).packed
            arr = minibit.formats.decode(p).astype(np.float32)
            if arch == "llama" and parts[2] in ("attn_q", "attn_k"):
                from minibit.io.gguf import permute_rows
                heads = m.config.num_heads if parts[2] == "attn_q" else m.config.num_kv_heads
                arr = permute_rows(arr, heads)
            written[t.name] = arr
            w.add_tensor(t.name, arr)
        else:
            data = np.array(t.data)
            if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                raise ValueError(f"{src}: {t.name} is {t.tensor_type.name}; only F32/F16 copied")
            w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return written


if __name__ == "__main__":
    import minibit
    write_f32_twin(minibit.load(sys.argv[1]), sys.argv[2], sys.argv[3])
    print("wrote", sys.argv[3])
