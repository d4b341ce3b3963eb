"""The container every format produces: :class:`Packed`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._errors import FormatError


@dataclass(frozen=True, eq=False)
class Packed:
    """A ternary weight matrix in one on-disk layout.

    fmt     the layout name: "hf_packed", "i2_s", "tl1", "tl2", "tq1_0" or "tq2_0".
    shape   (rows, cols) = (out_features, in_features) of the logical matrix W, y = x @ W.T.
    data    np.uint8, the bytes exactly as the peer's file holds them (1-D for i2_s/tl1/tl2,
            [rows, bytes_per_row] for tq1_0/tq2_0, [ceil(rows/4), cols] for hf_packed).
    scale   np.float32 array for formats that keep the scale outside ``data``
            (hf_packed's ``weight_scale``, TL1/TL2's ``<name>_scale`` tensor), else None.
    params  layout parameters that are not in the bytes (TL tiling: BM, BK, bm).
    divisor hf_packed from a "bitlinear" checkpoint (Falcon3 form): its weight_scale, which
            transformers divides by (R / (weight_scale * s)); ``scale`` holds 1 / divisor,
            the multiplier every other reader uses.  None otherwise.
    """

    fmt: str
    shape: tuple[int, int]
    data: np.ndarray
    scale: np.ndarray | None = None
    params: dict = field(default_factory=dict)
    divisor: float | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of data plus any separate scale."""
        return int(self.data.nbytes) + (0 if self.scale is None else int(self.scale.nbytes))

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / (self.shape[0] * self.shape[1])

    def __repr__(self) -> str:
        return (f"Packed(fmt={self.fmt!r}, shape={self.shape}, data=uint8{list(self.data.shape)}, "
                f"scale={None if self.scale is None else self.scale.tolist()}, params={self.params})")


def check_matrix(w, what: str = "w") -> np.ndarray:
    """A C-contiguous float32 copy-free view of a 2-D finite matrix, or FormatError.

    Never returns the caller's array if a conversion was needed, and never writes to it.
    """
    a = np.asarray(w)
    if a.ndim != 2:
        raise FormatError(f"{what}: expected a 2-D [rows, cols] matrix, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise FormatError(f"{what}: empty matrix of shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise FormatError(f"{what}: expected a float matrix, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise FormatError(f"{what}: non-finite value {a[tuple(bad)]} at {tuple(int(i) for i in bad)}")
    return a


def check_codes(codes, what: str = "codes") -> np.ndarray:
    """A C-contiguous int8 [rows, cols] matrix with values in {-1, 0, 1}, or FormatError."""
    c = np.asarray(codes)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise FormatError(f"{what}: expected a non-empty 2-D matrix, got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        raise FormatError(f"{what}: expected integer ternary codes, got dtype {c.dtype}")
    if c.size and (c.min() < -1 or c.max() > 1):
        raise FormatError(f"{what}: values must be in {{-1, 0, 1}}, got range [{c.min()}, {c.max()}]")
    return np.ascontiguousarray(c, dtype=np.int8)


def check_data(p: Packed, expected_nbytes: int, expected_ndim_shape=None) -> np.ndarray:
    """The packed bytes of ``p`` as C-contiguous uint8, checked against the expected size."""
    d = np.asarray(p.data)
    if d.dtype != np.uint8:
        raise FormatError(f"{p.fmt}: data must be uint8, got {d.dtype}")
    if expected_ndim_shape is not None and tuple(d.shape) != tuple(expected_ndim_shape):
        raise FormatError(f"{p.fmt}: data shape {tuple(d.shape)} does not match "
                          f"{tuple(expected_ndim_shape)} for a {p.shape} matrix")
    if d.size != expected_nbytes:
        raise FormatError(f"{p.fmt}: {d.size} data bytes, expected {expected_nbytes} for a "
                          f"{p.shape} matrix")
    return np.ascontiguousarray(d)


def single_scale(p: Packed) -> np.float32:
    """The one float32 scale of a per-tensor-scale format kept outside its bytes."""
    s = None if p.scale is None else np.asarray(p.scale, dtype=np.float32).reshape(-1)
    if s is None or s.size != 1:
        raise FormatError(f"{p.fmt}: expected exactly one float32 scale, got {p.scale!r}")
    return np.float32(s[0])


def any_code_3(data: np.ndarray, chunk: int = 1 << 24) -> bool:
    """True when some 2-bit field of ``data`` (uint8) holds 3, a code no ternary 2-bit format
    writes (I2_S and hf_packed store w + 1 in 0..2).  A bit test per byte, 16 MB at a time:
    loaders call it on every weight, so it must cost far less than unpacking the codes."""
    flat = np.asarray(data, dtype=np.uint8).reshape(-1)
    for s in range(0, flat.size, chunk):
        b = flat[s:s + chunk]
        if np.any(b & (b >> np.uint8(1)) & np.uint8(0x55)):
            return True
    return False
