"""Choosing the next token: penalties, temperature, top-k, top-p, min-p, and the draw.

The chain, applied in this order to the float32 logits of one position (all float64 work)::

    1. penalties over the recent history (llama.cpp's order): for each distinct token seen,
       repeat:    logit / rp if logit > 0 else logit * rp
       frequency: logit - fp * count        presence: logit - pp * (count > 0)
    2. temperature <= 0: greedy, the lowest id among the maximal logits.  Else divide by it.
    3. sort candidates by logit, descending; ties by lower id first (a stable order)
    4. top-k:  keep the first k (k <= 0: all)
    5. softmax over the kept ones: p_i = exp(z_i - z_0), unnormalized, summed left to right
    6. top-p:  keep the smallest prefix whose mass reaches p * total  (p >= 1: all)
    7. min-p:  keep the prefix with p_i >= min_p * p_0  (p_0 is the largest)
    8. draw:   u = rng.random() (one float64 from a NumPy Generator) * mass of the kept
               prefix; the token is the first whose running sum exceeds u

Every sum is a running (left to right) sum, so the Cython twin, which consumes the same
single random number per token, reproduces the choice exactly; a seed gives the same tokens
on both backends.  ``np.exp`` is shared by both implementations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._errors import FormatError

__all__ = ["SamplingParams", "apply_penalties", "candidates", "sample", "Sampler"]
# the functions of the minibit._fast twin: same names, signatures and bytes
TWINNED = ("candidates", "sample")


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64

    def __post_init__(self):
        checks = [("temperature", self.temperature >= 0), ("top_p", 0 < self.top_p <= 1),
                  ("min_p", 0 <= self.min_p <= 1), ("repeat_penalty", self.repeat_penalty > 0),
                  ("penalty_last_n", self.penalty_last_n >= 0)]
        for name, ok in checks:
            if not ok:
                raise FormatError(f"sampling: {name} = {getattr(self, name)!r} is out of range")
        self.top_k = int(self.top_k)


def apply_penalties(logits: np.ndarray, history, repeat_penalty: float, frequency_penalty: float,
                    presence_penalty: float, last_n: int) -> np.ndarray:
    """float64 copy of logits [V] with the penalties of step 1 applied."""
    x = np.array(logits, dtype=np.float64)
    hist = np.asarray(history, dtype=np.int64)[-last_n:] if last_n else np.zeros(0, np.int64)
    if hist.size == 0 or (repeat_penalty == 1.0 and frequency_penalty == 0.0 and presence_penalty == 0.0):
        return x
    tokens, counts = np.unique(hist, return_counts=True)            # ascending ids
    for t, c in zip(tokens.tolist(), counts.tolist()):
        if not 0 <= t < x.size:
            continue
        v = x[t]
        v = v / repeat_penalty if v > 0 else v * repeat_penalty
        x[t] = v - frequency_penalty * c - presence_penalty
    return x


def candidates(logits, history, params: SamplingParams):
    """Steps 1-7: (token ids, unnormalized probabilities) of the kept candidates, best
    first; for greedy (temperature 0) a single candidate with probability 1."""
    x = apply_penalties(logits, history, params.repeat_penalty, params.frequency_penalty,
                        params.presence_penalty, params.penalty_last_n)
    if params.temperature <= 0:
        return np.array([int(np.argmax(x))]), np.ones(1)
    x = x / params.temperature
    order = np.argsort(-x, kind="stable")                           # desc, ties: lower id first
    if params.top_k > 0:
        order = order[:params.top_k]
    z = x[order]
    p = np.exp(z - z[0])                                            # p[0] = 1
    cum = np.cumsum(p)                                              # running sums
    n = len(p)
    if params.top_p < 1.0:
        n = min(n, int(np.argmax(cum >= params.top_p * cum[-1])) + 1)
    if params.min_p > 0.0:
        n = min(n, int(np.sum(p[:n] >= params.min_p * p[0])))      # a prefix: p is descending
    return order[:n], p[:n]


def sample(logits, history, params: SamplingParams, rng: np.random.Generator) -> int:
    """One token id (steps 1-8).  Greedy consumes no random number."""
    ids, p = candidates(logits, history, params)
    if params.temperature <= 0:
        return int(ids[0])
    return _draw_one(ids, p, rng)


def _draw_one(ids, p, rng) -> int:
    cum = np.cumsum(p)
    u = rng.random() * cum[-1]
    k = int(np.searchsorted(cum, u, side="right"))
    return int(ids[min(k, len(ids) - 1)])


class Sampler:
    """A seeded sampler: ``Sampler(params, seed)(logits, history) -> token``."""

    def __init__(self, params: SamplingParams, seed=None, impl=None):
        self.params = params
        self.rng = np.random.default_rng(seed)
        self.impl = impl

    def __call__(self, logits, history) -> int:
        fn = sample if self.impl is None else self.impl.sample
        return fn(logits, history, self.params, self.rng)
