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
    params  layout parameters that are not in the bytes (TL tiling: BM, BK, bm; none given
            means the format's default_params, stored here once resolved).
    divisor hf_packed from a "bitlinear" checkpoint (Falcon3 form): its weight_scale, which
            transformers divides by (R / (weight_scale * s)); ``scale`` holds 1 / divisor,
            the multiplier every other reader uses.  None otherwise.
    hf_linear  hf_packed from an "autobitlinear" checkpoint (BitNet-2B4T form, 1bitLLM's
            float masters): "offline" (packed codes + weight_scale: transformers computes
            F.linear(q / s, codes) * weight_scale) or "online" (float masters ternarized at
            load: F.linear(q / s, codes * scale)).  The hf profile then sums those float
            products in MKL's order, as transformers does (minibit.kernels.float_ternary);
            None: the exact integer product (every other profile and format).

    A Packed checks itself once, when it is made, and raises FormatError naming the field:
    a known format, a shape of two positive integers the format can hold, uint8 data of
    exactly the format's ``data_shape`` (made C-contiguous), one finite float32 scale where
    the format keeps it outside the bytes and none where it does not, a valid tiling.  Every
    decoder and kernel then trusts it: none of them re-checks a byte count.
    """

    fmt: str
    shape: tuple[int, int]
    data: np.ndarray
    scale: np.ndarray | None = None
    params: dict = field(default_factory=dict)
    divisor: float | None = None
    hf_linear: str | None = None

    def __post_init__(self):
        from . import module                  # the format's reference module knows its layout

        mod = module(self.fmt)
        try:
            rows, cols = self.shape
        except (TypeError, ValueError):
            raise FormatError(f"{self.fmt}: shape must be (rows, cols), got {self.shape!r}") from None
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                   and v > 0 for v in (rows, cols)):
            raise FormatError(f"{self.fmt}: shape must be two positive integers, got {self.shape!r}")
        shape = (int(rows), int(cols))
        if not isinstance(self.params, dict):
            raise FormatError(f"{self.fmt}: params must be a dict, got {self.params!r}")
        params = mod.resolve_params(*shape, dict(self.params))
        want = mod.data_shape(*shape, params)
        d = self.data
        if not isinstance(d, np.ndarray) or d.dtype != np.uint8:
            raise FormatError(f"{self.fmt}: data must be a uint8 array, got "
                              f"{getattr(d, 'dtype', type(d).__name__)}")
        if d.shape != want:
            n = int(np.prod(want))
            raise FormatError(f"{self.fmt}: {d.size} data bytes, expected {n} (shape {want}) "
                              f"for a {shape} matrix, got shape {d.shape}")
        scale = self.scale
        if mod.SCALE_OUTSIDE:
            s = None if scale is None else np.asarray(scale)
            if s is None or s.size != 1 or not np.issubdtype(s.dtype, np.floating):
                raise FormatError(f"{self.fmt}: expected exactly one float32 scale, got {scale!r}")
            scale = s.astype(np.float32).reshape(1)
            if not np.isfinite(scale[0]):
                raise FormatError(f"{self.fmt}: scale {scale[0]!r} is not finite")
        elif scale is not None:
            raise FormatError(f"{self.fmt}: keeps its scale inside the bytes; got a separate "
                              f"scale {scale!r}")
        if self.hf_linear is not None and (self.fmt != "hf_packed" or self.divisor is not None
                                           or self.hf_linear not in ("offline", "online")):
            raise FormatError(f"{self.fmt}: hf_linear must be None, 'offline' or 'online' on an "
                              f"hf_packed weight without a divisor, got {self.hf_linear!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "data", np.ascontiguousarray(d))
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "params", params)

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


# (fmt, rows, cols) -> the data shape with default params: check_data runs for every kernel
# call of the decode loop, and the shape of a weight never changes
_SHAPES: dict = {}


def check_data(data, fmt: str, rows: int, cols: int, params=None) -> np.ndarray:
    """Bytes given without a Packed (a twin's arguments): C-contiguous uint8 of exactly the
    format's ``data_shape``, or FormatError.  The same rule Packed applies to itself."""
    key = (fmt, int(rows), int(cols))
    want = None if params else _SHAPES.get(key)
    if want is None:
        from . import module

        mod = module(fmt)
        want = mod.data_shape(int(rows), int(cols), mod.resolve_params(rows, cols, dict(params or {})))
        if not params:
            _SHAPES[key] = want
    d = np.asarray(data)
    if d.dtype != np.uint8 or d.shape != want:
        raise FormatError(f"{fmt}: data must be uint8 of shape {want} for a ({rows}, {cols}) "
                          f"matrix, got {d.dtype} {d.shape}")
    return np.ascontiguousarray(d)


def no_params(fmt: str, rows: int, cols: int, params: dict) -> dict:
    """resolve_params of a format without layout parameters: there must be none."""
    if params:
        raise FormatError(f"{fmt}: takes no layout parameters, got {sorted(params)}")
    return {}


def single_scale(p: Packed) -> np.float32:
    """The one float32 scale of a per-tensor-scale format kept outside its bytes."""
    return p.scale[0]


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
