"""minibit: a readable, exact reference for 1.58-bit (ternary) LLM inference.

Every kernel exists twice: a NumPy reference in this package (the spec) and a Cython twin in
``minibit._fast`` that gives the same bits.  ``minibit.backend()`` says which one runs;
``MINIBIT_PUREPYTHON=1`` forces the references.
"""

from ._backend import backend
from ._errors import FormatError
from . import quant, formats

__version__ = "0.1.0"

__all__ = ["backend", "FormatError", "quant", "formats", "__version__"]
