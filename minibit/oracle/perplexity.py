"""Perplexity and bits per byte of a model on a text.

Windows
-------
The text is tokenized once (with the model's BOS when its tokenizer adds one):
t_0 .. t_{n-1}.  Window k covers tokens [k*stride, min(k*stride + ctx, n)) and is run as a
fresh forward pass (no cache between windows).  Inside a window every token is predicted
from the tokens before it *in that window*; a token is scored by the first window that
predicts it, so with stride < ctx the later windows score only their last tokens, which
then have at least ctx - stride tokens of context.  The default stride = ctx gives
non-overlapping windows: each window's first token is context only, never scored (the
same scoring as the Hugging Face "perplexity of fixed-length models" recipe with
stride = max_length).  t_0 is never scored.

    NLL    = - sum over scored tokens of log p(t_i | window tokens before i)   (nats, float64)
    ppl    = exp(NLL / tokens scored)
    bits/byte = (NLL / ln 2) / bytes scored

``bytes scored`` is the UTF-8 length of the text scored: the whole text minus the text of
the tokens that were context only (each window's first token when windows do not overlap;
BOS has none).  A token's text is measured by decoding it after the 8 tokens before it,
so multi-byte characters split across tokens are counted where they complete.

This is not llama.cpp's ``llama-perplexity``: that tool starts every window of n_ctx with
BOS and scores only the second half of each window, so its numbers differ.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from .._errors import FormatError

__all__ = ["perplexity", "PerplexityResult", "windows", "token_nll"]


@dataclass
class PerplexityResult:
    """ppl and bits/byte, with what they were computed from."""

    ppl: float
    bits_per_byte: float
    nll: float                 # total negative log-likelihood, nats
    tokens_scored: int
    bytes_scored: int
    windows: int
    ctx: int
    stride: int

    @property
    def mean_nll(self) -> float:
        return self.nll / self.tokens_scored

    def __str__(self) -> str:
        return (f"perplexity {self.ppl:.4f}, {self.bits_per_byte:.4f} bits/byte "
                f"({self.tokens_scored} tokens, {self.bytes_scored} bytes, {self.windows} "
                f"windows of {self.ctx}, stride {self.stride})")


def windows(n: int, ctx: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_scored) of every window over n tokens: tokens [begin, end) are run,
    tokens [first_scored, end) are scored."""
    out = []
    prev_end = 0
    begin = 0
    while True:
        end = min(begin + ctx, n)
        first = max(begin + 1, prev_end)
        if first < end:
            out.append((begin, end, first))
        prev_end = end
        if end >= n:
            return out
        begin += stride


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row, float64: [T, vocab] float32, [T] -> [T]."""
    z = logits.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=-1))
    return lse - z[np.arange(z.shape[0]), targets]


def _read_source(source) -> str:
    if isinstance(source, str):
        return source
    if isinstance(source, (os.PathLike,)):
        try:
            with open(source, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise FormatError(f"{source}: cannot read the text ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise FormatError(f"{source}: not UTF-8 text ({e})") from None
    if hasattr(source, "read"):
        text = source.read()
        return text.decode("utf-8") if isinstance(text, bytes) else text
    raise FormatError(f"perplexity: expected text, a path or a file, got {type(source).__name__}")


def _complete_bytes(tok, ids: list) -> int:
    """UTF-8 length of the decoded ids without a trailing incomplete character (which the
    decoder shows as U+FFFD)."""
    return len(tok.decode(ids).rstrip("\ufffd").encode("utf-8"))


def _token_bytes(tok, ids: list, p: int) -> int:
    """UTF-8 bytes that token p adds to the decoded text, a multi-byte character counted at
    the token that completes it (special tokens add none)."""
    a = max(0, p - 8)
    return _complete_bytes(tok, ids[a:p + 1]) - _complete_bytes(tok, ids[a:p])


def perplexity(model, source, ctx: int | None = None, stride: int | None = None,
               progress: bool = True) -> PerplexityResult:
    """Perplexity and bits/byte of ``model`` on a text (module docstring: the windows).

    source: the text itself (a str is always text), a path (os.PathLike, read as UTF-8) or
    an open file.  ctx: tokens per window (default min(512, the model's context)); stride:
    tokens between window starts (default ctx: non-overlapping).  progress: a tqdm bar on
    stderr.
    """
    from tqdm import tqdm

    text = _read_source(source)
    tok = model.tokenizer
    if tok is None:
        raise FormatError("perplexity needs a model with a tokenizer")
    cmax = model.config.max_position
    ctx = min(512, cmax) if ctx is None else ctx
    if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 2:
        raise FormatError(f"ctx must be an integer of at least 2, got {ctx!r}")
    stride = ctx if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= ctx:
        raise FormatError(f"stride must be an integer in [1, ctx = {ctx}], got {stride!r}")
    ids = list(tok.encode(text))
    if len(ids) < 2:
        raise FormatError(f"the text gives {len(ids)} token(s): at least 2 are needed")
    arr = np.asarray(ids, dtype=np.int64)
    wins = windows(len(ids), ctx, stride)

    unscored = sorted(set(range(len(ids))) - {i for _, e, f in wins for i in range(f, e)})
    n_bytes = len(text.encode("utf-8")) - sum(_token_bytes(tok, ids, p) for p in unscored)
    if n_bytes <= 0:
        raise FormatError("the scored tokens hold no text (0 bytes)")

    total, count = 0.0, 0
    bar = tqdm(wins, desc="perplexity", unit="window", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    for begin, end, first in bar:
        logits = model.logits(arr[begin:end])                       # [end-begin, vocab] f32
        rows = np.arange(first - 1, end - 1) - begin                 # position predicting i
        nll = token_nll(logits[rows], arr[first:end])                # [scored] float64
        total += float(nll.sum())
        count += int(nll.size)
        bar.set_postfix(ppl=f"{math.exp(total / count):.3f}")
    bar.close()
    return PerplexityResult(ppl=math.exp(total / count),
                            bits_per_byte=total / math.log(2) / n_bytes, nll=total,
                            tokens_scored=count, bytes_scored=n_bytes, windows=len(wins),
                            ctx=ctx, stride=stride)
