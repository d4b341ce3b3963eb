"""A pre-quantization twin of a ternary GGUF: the same file with every ternary projection
written as F32 values {-s, 0, +s} (codes times the tensor scale), the form the engines'
converters hand to their quantizers (``llama-quantize model-f32.gguf out.gguf I2_S 1``).
tools/peers uses it to have bitnet.cpp's and llama.cpp's own quantizers write I2_S / TQ1_0 /
TQ2_0 from minibit's codes; ``minibit bench model --ik-llama`` to have ik_llama.cpp's write
IQ2_BN (ik_llama.cpp numbers its ggml types differently and cannot read a TQ2_0 file).
"""

from __future__ import annotations

import numpy as np

__all__ = ["write_f32_twin"]


def write_f32_twin(model, src: str, dst: str) -> dict:
    """Write dst: src's metadata and non-ternary tensors, and ``model``'s ternary projections
    as F32 (minibit's formats.decode of each, q/k permuted back for arch "llama").  src is a
    GGUF the ``gguf`` package reads (TQ1_0/TQ2_0; it has no I2_S type) written from the same
    model.  Returns {tensor name: float32 array} of the projections written."""
    from ... import formats
    from .names import PROJ, permute_rows
    from .writer import gguf_package, new_writer

    gguf = gguf_package()
    m = model
    r = gguf.GGUFReader(src)
    arch = str(r.fields["general.architecture"].contents())
    w = new_writer(dst, arch)
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
            arr = formats.decode(p).astype(np.float32)
            if arch == "llama" and parts[2] in ("attn_q", "attn_k"):
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
