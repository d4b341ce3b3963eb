"""Compare two dumps tensor by tensor and name the first place they part.

``compare(dir_a, dir_b)`` aligns the entries of two dumps (``minibit.oracle.dump`` format)
by name, in dir_a's forward order, and for each pair reports::

    max|diff|   max over elements of |a - b|                       (float64)
    rel err     ||a - b||_2 / ||a||_2  (a is the reference; 0 if both are zero, inf if only a is)
    cosine      a.b / (||a|| ||b||)    (1 if both are zero)
    differ      how many elements are not equal (NaN equals NaN)

The first diverging tensor is the first one, in forward order, whose relative error is above
the threshold (``fail_above``, else 0: the first tensor that is not identical).  Elements that
are NaN or inf in one dump and not the same in the other make the relative error inf.

For the logits (``result_output``): top-1 agreement per position and the KL divergence
KL(P_a || P_b) per position in nats, with softmax in float64.

Shapes.  Another engine may write a tensor flattened ([T, H*D] for [T, H, D]): same size and
same first dimension are reshaped to dir_a's shape.  llama.cpp computes the last layer's
tensors and the logits for the last position only: a [1, ...] tensor against a [T, ...] one
is compared with the last row ("last position" in the note).  Any other mismatch counts as
diverging.  Names llama.cpp uses for the same tensor are accepted as aliases: ``ffn_down-i``
for ``ffn_out-i``, ``ffn_sub_out-i`` for ``ffn_gate_par-i``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from .._errors import FormatError
from .dump import load_entry, read_manifest

__all__ = ["compare", "CompareReport", "TensorDiff", "LogitsDiff", "ALIASES"]

ALIASES = {"ffn_down": "ffn_out", "ffn_sub_out": "ffn_gate_par"}


@dataclass
class TensorDiff:
    """One aligned pair: a from the first dump, b from the second."""

    name: str
    shape_a: tuple
    shape_b: tuple
    dtype_a: str
    dtype_b: str
    max_abs: float = 0.0
    rel_err: float = 0.0
    cosine: float = 1.0
    n_diff: int = 0
    size: int = 0
    note: str = ""

    @property
    def identical(self) -> bool:
        return self.n_diff == 0 and self.rel_err == 0 and not self.note.startswith("shape")


@dataclass
class LogitsDiff:
    """result_output: per position top-1 agreement and KL(P_a || P_b) in nats."""

    top1_agree: list
    kl: list
    top1_a: list
    top1_b: list

    @property
    def top1_rate(self) -> float:
        return sum(self.top1_agree) / len(self.top1_agree) if self.top1_agree else 1.0

    @property
    def kl_mean(self) -> float:
        return float(np.mean(self.kl)) if self.kl else 0.0

    @property
    def kl_max(self) -> float:
        return float(np.max(self.kl)) if self.kl else 0.0


@dataclass
class CompareReport:
    """What compare() found.  ``ok``: every tensor within fail_above (or, when no
    fail_above was given, every tensor identical)."""

    dir_a: str
    dir_b: str
    rows: list = field(default_factory=list)
    threshold: float = 0.0
    fail_above: float | None = None
    first_diverging: str | None = None
    logits: LogitsDiff | None = None
    only_in_a: list = field(default_factory=list)
    only_in_b: list = field(default_factory=list)

    @property
    def max_rel_err(self) -> float:
        return max((r.rel_err for r in self.rows), default=0.0)

    @property
    def ok(self) -> bool:
        return self.first_diverging is None

    def row(self, name: str) -> TensorDiff:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rows"] = [asdict(r) for r in self.rows]
        if self.logits is not None:
            d["logits"].update(top1_rate=self.logits.top1_rate, kl_mean=self.logits.kl_mean,
                               kl_max=self.logits.kl_max)
        d["ok"] = self.ok
        return _json_safe(d)

    def summary(self) -> str:
        lines = []
        if self.first_diverging is None:
            how = "identical" if self.threshold == 0 else f"within rel err {self.threshold:g}"
            lines.append(f"all {len(self.rows)} common tensors {how}")
        else:
            r = self.row(self.first_diverging)
            why = r.note if r.note.startswith("shape") else f"rel err {_num(r.rel_err)}"
            lines.append(f"first diverging: {r.name} ({why} > {self.threshold:g}); "
                         f"max rel err over all tensors {_num(self.max_rel_err)}")
        if self.logits is not None:
            lg = self.logits
            lines.append(f"logits: top-1 agrees at {sum(lg.top1_agree)}/{len(lg.top1_agree)} "
                         f"positions; KL(a||b) mean {lg.kl_mean:.3g}, max {lg.kl_max:.3g} nats")
        for where, names in ((self.dir_a, self.only_in_a), (self.dir_b, self.only_in_b)):
            if names:
                more = ", ..." if len(names) > 6 else ""
                lines.append(f"only in {where}: {len(names)} ({', '.join(names[:6])}{more})")
        return "\n".join(lines)

    def table(self, only_diff: bool = False) -> str:
        """A fixed-width table of every row (or only rows that differ), then the summary."""
        rows = [r for r in self.rows if not (only_diff and r.identical)]
        w = max([len(r.name) for r in rows] + [6])
        out = [f"{'tensor':<{w}}  {'shape':<16}  {'max|diff|':>10}  {'rel err':>10}  "
               f"{'cosine':>10}  {'differ':>14}  note"]
        for r in rows:
            mark = " <- first" if r.name == self.first_diverging else ""
            out.append(f"{r.name:<{w}}  {_shape(r.shape_a):<16}  {_num(r.max_abs):>10}  "
                       f"{_num(r.rel_err):>10}  {r.cosine:>10.7f}  "
                       f"{f'{r.n_diff}/{r.size}':>14}  {r.note}{mark}".rstrip())
        out.append(self.summary())
        return "\n".join(out)


def _num(v: float) -> str:
    return "0" if v == 0 else ("inf" if math.isinf(v) else ("nan" if math.isnan(v) else f"{v:.3e}"))


def _shape(s) -> str:
    return "[" + ", ".join(str(int(d)) for d in s) + "]"


def _json_safe(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    return o


# ---- alignment -----------------------------------------------------------------------------

def _canonical(name: str) -> str:
    base, sep, layer = name.rpartition("-")
    if sep and layer.isdigit() and base in ALIASES:
        return f"{ALIASES[base]}-{layer}"
    return name


def _index(entries: list) -> dict:
    """name -> entry, with llama.cpp aliases mapped to minibit's names where not taken."""
    by = {e["name"]: e for e in entries}
    for e in entries:
        c = _canonical(e["name"])
        if c != e["name"] and c not in by:
            by[c] = e
    return by


def _align(a: np.ndarray, b: np.ndarray):
    """(a, b, note) with equal shapes, or None when the shapes cannot be matched."""
    if a.shape == b.shape:
        return a, b, ""
    if a.ndim and b.ndim and a.size == b.size and a.shape[0] == b.shape[0]:
        return a, b.reshape(a.shape), "reshaped"
    if a.ndim and b.ndim and b.shape[0] == 1 and a.shape[0] > 1 and a[-1:].size == b.size:
        return a[-1:].reshape(b.shape), b, "last position"
    if a.ndim and b.ndim and a.shape[0] == 1 and b.shape[0] > 1 and b[-1:].size == a.size:
        return a, b[-1:].reshape(a.shape), "last position"
    return None


def _diff(name: str, a: np.ndarray, b: np.ndarray) -> TensorDiff:
    r = TensorDiff(name, tuple(a.shape), tuple(b.shape), str(a.dtype), str(b.dtype))
    al = _align(a, b)
    if al is None:
        r.note = f"shape {_shape(a.shape)} vs {_shape(b.shape)}"
        r.rel_err = r.max_abs = math.inf
        r.cosine = 0.0
        return r
    a, b, r.note = al
    x = a.astype(np.float64).reshape(-1)
    y = b.astype(np.float64).reshape(-1)
    r.size = int(x.size)
    fa, fb = np.isfinite(x), np.isfinite(y)
    both = fa & fb
    same_nonfinite = (~fa & ~fb) & ((x == y) | (np.isnan(x) & np.isnan(y)))
    bad = ~both & ~same_nonfinite
    r.n_diff = int((x[both] != y[both]).sum() + bad.sum())
    if bad.any():
        r.max_abs = r.rel_err = math.inf
        r.cosine = float("nan")
        r.note = (r.note + "; " if r.note else "") + f"{int(bad.sum())} non-finite mismatches"
        return r
    x, y = x[both], y[both]
    d = x - y
    r.max_abs = float(np.abs(d).max()) if d.size else 0.0
    na, nb, nd = (float(np.linalg.norm(v)) for v in (x, y, d))
    r.rel_err = (0.0 if nd == 0 else math.inf) if na == 0 else nd / na
    if na == 0 and nb == 0:
        r.cosine = 1.0
    elif na == 0 or nb == 0:
        r.cosine = 0.0
    else:
        r.cosine = float(np.dot(x, y) / (na * nb))
    return r


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def _logits(a: np.ndarray, b: np.ndarray) -> LogitsDiff | None:
    al = _align(a, b)
    if al is None or a.ndim < 1:
        return None
    a, b, _ = al
    a = a.reshape(-1, a.shape[-1])                                   # [positions, vocab]
    b = b.reshape(-1, a.shape[-1])
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    la, lb = _log_softmax(a), _log_softmax(b)
    kl = (np.exp(la) * (la - lb)).sum(axis=-1)                       # [positions] nats
    ta, tb = a.argmax(axis=-1), b.argmax(axis=-1)
    return LogitsDiff(top1_agree=[bool(v) for v in ta == tb], kl=[float(max(k, 0.0)) for k in kl],
                      top1_a=[int(v) for v in ta], top1_b=[int(v) for v in tb])


# ---- entry point ---------------------------------------------------------------------------

def compare(dir_a: str, dir_b: str, fail_above: float | None = None, out="stdout",
            only_diff: bool = False) -> CompareReport:
    """Compare dump dir_b against dir_a (the reference); print the table to ``out`` (a text
    file; "stdout": sys.stdout at call time; None: print nothing) and return the report.

    fail_above: the relative error above which a tensor diverges (None: any difference).
    Raises FormatError when a directory is not a dump, the two dumps are of different
    token ids, or they have no tensor in common.
    """
    if fail_above is not None and not (fail_above >= 0):
        raise FormatError(f"fail_above must be a non-negative number, got {fail_above!r}")
    ma, mb = read_manifest(dir_a), read_manifest(dir_b)
    ia, ib = ma.get("token_ids"), mb.get("token_ids")
    if ia is not None and ib is not None and list(ia) != list(ib):
        at = next((k for k, (u, v) in enumerate(zip(ia, ib)) if u != v), min(len(ia), len(ib)))
        raise FormatError(f"{dir_a} and {dir_b} are dumps of different token ids "
                          f"({len(ia)} vs {len(ib)} tokens; first difference at position {at})")
    bi = _index(mb["entries"])
    rep = CompareReport(str(dir_a), str(dir_b), fail_above=fail_above,
                        threshold=0.0 if fail_above is None else float(fail_above))
    used_b = set()
    for ea in ma["entries"]:
        name = ea["name"]
        eb = bi.get(name) or bi.get(_canonical(name))
        if eb is None:
            rep.only_in_a.append(name)
            continue
        used_b.add(eb["name"])
        a, b = load_entry(dir_a, ea), load_entry(dir_b, eb)
        r = _diff(name, a, b)
        rep.rows.append(r)
        over = r.rel_err > rep.threshold if rep.threshold > 0 else not r.identical
        if rep.first_diverging is None and over:
            rep.first_diverging = name
        if _canonical(name) == "result_output" or ea.get("kind") == "logits":
            rep.logits = _logits(a, b)
    rep.only_in_b = [e["name"] for e in mb["entries"] if e["name"] not in used_b]
    if not rep.rows:
        raise FormatError(f"{dir_a} and {dir_b} have no tensor names in common")
    if out is not None:
        print(rep.table(only_diff=only_diff), file=sys.stdout if out == "stdout" else out)
    return rep
