"""Command line for minibit.io.gguf.f32_twin (the F32 pre-quantization form of a minibit GGUF):

    python tools/peers/f32_twin.py model.i2_s.gguf model.tq2_0.gguf model.f32.gguf
"""

from __future__ import annotations

import sys

from minibit.io.gguf.f32_twin import write_f32_twin

__all__ = ["write_f32_twin"]

if __name__ == "__main__":
    import minibit
    write_f32_twin(minibit.load(sys.argv[1]), sys.argv[2], sys.argv[3])
    print("wrote", sys.argv[3])
