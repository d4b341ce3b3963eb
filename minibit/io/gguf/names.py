"""GGUF names for minibit's model: architectures, projection tensor names, and llama.cpp's
q/k row permutation.

Architectures (general.architecture)
------------------------------------
========================== ============ ========== ===========================================
arch                       FFN act      sub-norms  minibit Config.arch / source
========================== ============ ========== ===========================================
bitnet-b1.58, bitnet-25    relu2        yes        "bitnet-b1.58"; bitnet.cpp's fork names
                                                   (LLM_ARCH_BITNET_B158 / _25, build_bitnet_158)
bitnet                     silu         yes        "bitnet"; mainline llama.cpp's graph
                                                   (src/models/bitnet.cpp, LLM_FFN_SILU): the
                                                   1bitLLM layout, tied, NeoX RoPE
llama                      silu         no         "llama" (Falcon3-1.58bit); q/k rows permuted
========================== ============ ========== ===========================================

The graph's activation is fixed by the arch name (no key carries it).  bitnet.cpp's own
converter labels every BitNet model "bitnet-b1.58", 1bitLLM ones included, and its fork runs
that name with relu2, so minibit does the same.  For "llama", llama.cpp's converter permutes
the q and k rows of each head for its interleaved RoPE (``permute``: rows [head, 2, half] ->
[head, half, 2], k with the kv head count; llama.cpp ``convert_hf_to_gguf.py`` LlamaModel,
bitnet.cpp ``convert-hf-to-gguf-bitnet.py`` LlamaModel.permute).  The reader undoes it (row
permutations are lossless in every format: TQ and I2_S rows are byte ranges, TL is repacked),
so minibit's rotate_half RoPE sees transformers' order; the writer applies it.

"""

from __future__ import annotations

import numpy as np

from ... import formats
from ..._errors import FormatError

__all__ = ["PROJ", "ARCHS", "gguf_arch_of", "permute_rows", "unpermute_rows", "permute_packed",
           "row_permutation"]

# the projections minibit keeps ternary: GGUF name -> Layer field
PROJ = {"attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_output": "o",
        "ffn_gate": "gate", "ffn_up": "up", "ffn_down": "down"}
ARCHS = {"bitnet-b1.58": ("bitnet-b1.58", "relu2", True),
         "bitnet-25": ("bitnet-b1.58", "relu2", True),
         "bitnet": ("bitnet", "silu", True),
         "llama": ("llama", "silu", False)}


def gguf_arch_of(cfg) -> str:
    """The GGUF architecture name a Config is written as."""
    if cfg.sub_norms and cfg.hidden_act == "silu":
        return "bitnet"                  # mainline llama.cpp's bitnet graph (1bitLLM form)
    if cfg.sub_norms and cfg.hidden_act == "relu2":
        return "bitnet-b1.58"            # bitnet.cpp's fork only (build_bitnet_158)
    if not cfg.sub_norms and cfg.hidden_act == "silu":
        return "llama"                   # Falcon3-1.58bit: plain llama graph
    raise FormatError(f"no GGUF architecture runs a {cfg.hidden_act} model without sub-norms")


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter permutation of q/k rows: per head, [2, half] -> [half, 2]."""
    return w[row_permutation(w.shape[0], n_head, inverse=False)]


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of permute_rows: what a reader applies to a "llama" file's q/k."""
    return w[row_permutation(w.shape[0], n_head, inverse=True)]


def row_permutation(rows: int, n_head: int, inverse: bool) -> np.ndarray:
    """Index array p with permuted = original[p] (or its inverse)."""
    if n_head <= 0 or rows % (2 * n_head):
        raise FormatError(f"cannot permute {rows} rows for RoPE across {n_head} heads "
                          f"(rows must be a multiple of 2 * heads)")
    half = rows // n_head // 2
    idx = np.arange(rows)
    if not inverse:
        return idx.reshape(n_head, 2, half).swapaxes(1, 2).reshape(-1)
    return idx.reshape(n_head, half, 2).swapaxes(1, 2).reshape(-1)


def permute_packed(p, idx: np.ndarray):
    """Packed with rows reordered as rows_new = rows_old[idx], losslessly in its own format."""
    M, K = p.shape
    if p.fmt in ("tq1_0", "tq2_0"):
        return formats.Packed(p.fmt, p.shape, np.ascontiguousarray(np.asarray(p.data)[idx]), p.scale,
                              dict(p.params))
    if p.fmt == "i2_s":
        d = np.asarray(p.data).reshape(-1)
        n4 = M * K // 4
        body = d[:n4].reshape(M, K // 4)[idx]
        return formats.Packed("i2_s", p.shape, np.concatenate([body.reshape(-1), d[n4:]]), None)
    codes, scale = formats.unpack_codes(p)
    return formats.pack_codes(p.fmt, codes[idx], scale, **dict(p.params))
