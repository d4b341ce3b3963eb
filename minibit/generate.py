"""The decode loop: prompt -> tokens -> text, streamed, with stop strings and EOS.

``generate_tokens`` yields token ids; ``stream_text`` turns them into text pieces that are
safe to print: a piece is released only when (1) it decodes to complete UTF-8 (a token
that ends inside a multi-byte character is held back) and (2) it cannot be the start of a
stop string (text that might grow into one waits for the next token).  A stop string is
found even when it spans several tokens; the text before it is returned, the stop string
is not.

Context limit: the KV cache holds ``config.max_position`` tokens.  A prompt longer than that
raises FormatError; generation ends (finish reason "length") when the cache is full.  No
sliding window: positions past what the model was trained on would be extrapolation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _backend, sampling
from ._errors import FormatError

__all__ = ["GenerationResult", "generate", "generate_tokens", "render_chat", "DEFAULT_TEMPLATE"]

# Used when a model ships no chat template: the BitNet-2B4T form, with the model's EOS.
DEFAULT_TEMPLATE = ("{% for message in messages %}{{ message['role'] | capitalize + ': ' + "
                    "message['content'] | trim + eot }}{% endfor %}"
                    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")


@dataclass
class GenerationResult:
    text: str
    tokens: list = field(default_factory=list)
    finish_reason: str = "length"       # "length" | "eos" | "stop" | "context"
    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


def _sampler_impl():
    return _backend.select("sampling", sampling)


def generate_tokens(model, prompt_ids, max_new_tokens: int, params: sampling.SamplingParams,
                    seed=None, stats: GenerationResult | None = None):
    """Yield new token ids one at a time; stops at EOS, max_new_tokens or a full cache."""
    import time

    cfg = model.config
    ids = list(prompt_ids)
    if len(ids) >= cfg.max_position:
        raise FormatError(f"the prompt has {len(ids)} tokens; the model's context is "
                          f"{cfg.max_position}")
    cache = model.new_cache(min(cfg.max_position, len(ids) + max(max_new_tokens, 1)))
    sampler = sampling.Sampler(params, seed, impl=_sampler_impl())
    eos = set(model.tokenizer.eos_ids if model.tokenizer is not None else cfg.eos_token_ids)
    t0 = time.perf_counter()
    logits = model.forward(ids, cache, last_only=True)
    t1 = time.perf_counter()
    if stats is not None:
        stats.prompt_tokens = len(ids)
        stats.prefill_seconds = t1 - t0
    history = list(ids)
    for step in range(max_new_tokens):
        tok = sampler(logits[-1], history)
        if tok in eos:
            if stats is not None:
                stats.finish_reason = "eos"
            return
        history.append(tok)
        yield tok
        if step + 1 == max_new_tokens:
            break
        if cache.len >= cache.max_len:
            if stats is not None:
                stats.finish_reason = "context"
            return
        t = time.perf_counter()
        logits = model.forward([tok], cache, last_only=True)
        if stats is not None:
            stats.decode_seconds += time.perf_counter() - t
    if stats is not None:
        stats.finish_reason = "length"


def _holdback(text: str, stops) -> int:
    """How many trailing characters of text could still become the start of a stop string."""
    keep = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                keep = max(keep, n)
                break
    return keep


def stream_text(model, token_iter, stops=(), result: GenerationResult | None = None):
    """Yield text pieces for a token stream (see the module docstring)."""
    tok = model.tokenizer
    ids: list[int] = []
    emitted = 0                      # characters of the decoded text already yielded
    stops = [s for s in stops if s]
    for t in token_iter:
        ids.append(t)
        if result is not None:
            result.tokens.append(t)
        text = tok.decode(ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for more bytes
            continue
        hit = min((text.find(s, max(0, emitted - len(s))) for s in stops
                   if text.find(s, max(0, emitted - len(s))) >= 0), default=-1)
        if hit >= 0:
            if hit > emitted:
                yield text[emitted:hit]
            if result is not None:
                result.finish_reason = "stop"
            return
        safe = len(text) - _holdback(text, stops)
        if safe > emitted:
            yield text[emitted:safe]
            emitted = safe
    text = tok.decode(ids)
    if len(text) > emitted:
        yield text[emitted:]


def generate(model, prompt: str, max_new_tokens: int = 128, temperature: float = 0.8,
             top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repeat_penalty: float = 1.0,
             seed=None, stop=(), stream: bool = False, frequency_penalty: float = 0.0,
             presence_penalty: float = 0.0, result: GenerationResult | None = None):
    """Text continuation of ``prompt``: a str, or an iterator of str pieces with stream=True."""
    if model.tokenizer is None:
        raise FormatError(f"{model.source}: this model has no tokenizer; pass token ids to model.forward")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise FormatError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if isinstance(stop, str):
        stop = (stop,)
    params = sampling.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                     repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
                                     presence_penalty=presence_penalty)
    res = result if result is not None else GenerationResult(text="")
    tok = model.tokenizer
    bos_text = tok.id_to_token(tok.bos_id) if tok.bos_id is not None else None
    # a chat template that writes the BOS itself must not get a second one
    ids = tok.encode(prompt, bos=not (bos_text and prompt.startswith(bos_text)))
    pieces = stream_text(model, generate_tokens(model, ids, max_new_tokens, params, seed, res),
                         stop, res)
    if stream:
        return _collect(pieces, res)
    res.text = "".join(pieces)
    return res.text


def _collect(pieces, res):
    for p in pieces:
        res.text += p
        yield p


def render_chat(model, messages, add_generation_prompt: bool = True) -> str:
    """The prompt text for a chat, through the model's Jinja template (sandboxed)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not isinstance(messages, (list, tuple)) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise FormatError("messages must be a list of {'role': str, 'content': str}")
    template = model.chat_template or DEFAULT_TEMPLATE
    tok = model.tokenizer
    eos_ids = tok.eos_ids if tok is not None else []
    eot = tok.id_to_token(eos_ids[-1]) if eos_ids else ""
    bos = tok.id_to_token(tok.bos_id) if tok is not None and tok.bos_id is not None else ""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        return env.from_string(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                                bos_token=bos, eos_token=eot, eot=eot)
    except Exception as e:  # template syntax or sandbox errors, reported with the source
        raise FormatError(f"{model.source}: chat template failed to render ({e})") from None
