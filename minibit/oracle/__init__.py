"""minibit as an oracle for other engines.

dump(model, prompt or ids, out_dir, profile=None)   every stage of one forward pass, one .npy
                                                    per tensor + manifest.json (llama.cpp and
                                                    transformers names)
compare(dir_a, dir_b, fail_above=None)              per-tensor diff of two dumps, the first
                                                    diverging tensor, logits top-1 and KL
vectors(fmt, out_dir)                               kernel test vectors: packed bytes, int8
                                                    inputs, int32 accumulators, float outputs
perplexity(model, text, ctx=None, stride=None)      perplexity and bits per byte

The file formats are specified in docs/oracle.md.  The ``minibit dump | compare | vectors |
perplexity`` subcommands (``minibit/cli/``) call these functions; bad input raises FormatError.
"""

from __future__ import annotations

from .compare import CompareReport, compare
from .dump import dump, read_manifest
from .perplexity import PerplexityResult, perplexity
from .vectors import vectors

__all__ = ["dump", "read_manifest", "compare", "CompareReport", "vectors", "perplexity",
           "PerplexityResult"]
