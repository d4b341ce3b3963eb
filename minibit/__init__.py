"""minibit: a readable, exact reference for 1.58-bit (ternary) LLM inference.

Every kernel exists twice: a NumPy reference in this package (the spec) and a Cython twin in
``minibit._fast`` that gives the same bits.  ``minibit.backend()`` says which one runs;
``MINIBIT_PUREPYTHON=1`` forces the references.

This module is the public face and only re-exports: ``load`` and ``save_gguf`` live in
``minibit.io``, ``backend`` in ``minibit._backend``.  No module of the package imports it.
"""

from ._backend import backend
from ._errors import FormatError
from ._version import __version__
from . import quant, formats
from .io import load, save_gguf

__all__ = ["backend", "FormatError", "quant", "formats", "load", "save_gguf", "__version__"]
