"""GGUF in and out: read llama.cpp's and bitnet.cpp's ternary model files, write files they run.

    reader.py   GGUFFile: the validated, memory-mapped parser; what `minibit inspect` prints
    names.py    architectures, projection tensor names, llama.cpp's q/k row permutation
    vocab.py    the tokenizer <-> tokenizer.ggml.* metadata, both ways
    load.py     load_gguf(path, profile) -> Model (the assembly; profiles and repacking)
    writer.py   save_gguf(model, path, weight_format): TQ1_0/TQ2_0, I2_S, TL1/TL2

Each module's docstring carries its part of the format's facts and sources.
"""

from ...kernels.fit import fit_profile
from .load import load_gguf, natural_profile_of
from .names import ARCHS, PROJ, gguf_arch_of, permute_rows, unpermute_rows
from .reader import (FTYPE_I2_S, I2_S, TL1, TL2, GGUFFile, TensorInfo, inspect_lines,
                     metadata_lines, tensor_rows)
from .vocab import LLAMA3_PRES, LLAMA3_REGEX, read_tokenizer, tokenizer_from_meta
from .writer import EXTRA_WEIGHT_FORMATS, WEIGHT_FORMATS, new_writer, save_gguf

__all__ = ["GGUFFile", "TensorInfo", "load_gguf", "save_gguf", "inspect_lines", "tensor_rows",
           "metadata_lines", "read_tokenizer", "tokenizer_from_meta", "fit_profile",
           "permute_rows", "unpermute_rows", "natural_profile_of", "gguf_arch_of", "PROJ",
           "ARCHS", "WEIGHT_FORMATS", "EXTRA_WEIGHT_FORMATS", "new_writer", "LLAMA3_REGEX",
           "LLAMA3_PRES", "I2_S", "TL1", "TL2", "FTYPE_I2_S"]
