"""The one step every loader ends with: checkpoint tensors, already checked, into a Model.

A loader (``io/hf.py`` for HF snapshot directories, ``io/gguf/load.py`` for GGUF files) knows
its source's tensor names and layouts; it reads the config, one ``LayerWeights`` per block, the
embedding, final norm and optional LM head, the tokenizer and chat template, and hands them
here.  ``model/`` never sees a checkpoint name: a BitLinear keeps the loader's tensor name
only to name it in errors and dumps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model.config import Config
from ..model.layers import BitLinear
from ..model.model import Model
from ..model.transformer import Layer, Transformer

__all__ = ["LayerWeights", "assemble", "PROJECTIONS"]

# the seven ternary projections of a block, by Layer field
PROJECTIONS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class LayerWeights:
    """One block as read from a checkpoint.

    linears   {Layer field ("q", ..., "down"): (tensor name, Packed)}
    norms     {"attn_norm", "ffn_norm"[, "attn_sub_norm", "ffn_sub_norm"]: float32 [width]}
    """

    linears: dict = field(default_factory=dict)
    norms: dict = field(default_factory=dict)


def assemble(config: Config, layers: list, embed, embed_dtype: str, final_norm: np.ndarray,
             lm_head, lm_head_dtype: str | None, tokenizer, profile: str, source: str,
             chat_template: str | None = None) -> Model:
    """A Model from checked weights: a BitLinear per projection under ``profile``, a Layer
    per block, the Transformer, then the Model with its tokenizer and chat template."""
    blocks = []
    for lw in layers:
        lin = {k: BitLinear(name, packed, profile) for k, (name, packed) in lw.linears.items()}
        blocks.append(Layer(**lin, **lw.norms))
    transformer = Transformer(config, embed, embed_dtype, blocks, final_norm, lm_head,
                              lm_head_dtype)
    return Model(transformer, tokenizer, profile, source=source, chat_template=chat_template)
