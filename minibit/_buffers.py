"""The one check for a buffer a kernel writes into (a twin writes through its raw pointer).

A twin trusts the pointer it is given: a read-only array (a memory-mapped file opened "r",
``setflags(write=False)``) would be written anyway or fault, a strided or misaligned one would
be written in the wrong places.  So every output buffer passes here first, on both backends.
"""

from __future__ import annotations

import numpy as np

from ._errors import FormatError

__all__ = ["check_output"]


def check_output(a, what: str, dtypes, ndim: int | None = None, shape=None) -> np.ndarray:
    """``a`` when it is a writeable, aligned, C-contiguous ndarray of one of ``dtypes`` (with
    ``ndim`` dimensions / exactly ``shape`` when given); else FormatError naming ``what``."""
    names = " or ".join(np.dtype(d).name for d in dtypes)
    if not isinstance(a, np.ndarray) or a.dtype not in [np.dtype(d) for d in dtypes]:
        raise FormatError(f"{what} must be a C-contiguous {names} array, got "
                          f"{getattr(a, 'dtype', type(a).__name__)}")
    if (ndim is not None and a.ndim != ndim) or (shape is not None and a.shape != tuple(shape)):
        want = tuple(shape) if shape is not None else f"{ndim} dimensions"
        raise FormatError(f"{what} must be of shape {want}, got {a.shape}")
    if not a.flags.writeable:
        raise FormatError(f"{what} must be writeable; it is read-only (a memory-mapped file "
                          f"opened read-only, or setflags(write=False))")
    if not a.flags.c_contiguous or not a.flags.aligned:
        raise FormatError(f"{what} must be C-contiguous and aligned (strides {a.strides})")
    return a
