"""The tokenizer as GGUF metadata (``tokenizer.ggml.*``), both ways.

``tokenizer_from_meta(meta, source)`` rebuilds a ``tokenizers.Tokenizer`` the way llama.cpp
builds its vocabulary from the file's keys (what ``load_gguf`` attaches to the model);
``tokenizer_meta(model)`` gives the keys llama.cpp's converters write for a model's tokenizer
(what ``save_gguf`` writes).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..._errors import FormatError
from ...tokenizer import Tokenizer

__all__ = ["read_tokenizer", "tokenizer_from_meta", "tokenizer_meta", "LLAMA3_REGEX",
           "LLAMA3_PRES"]

# tokenizer.ggml.token_type values (gguf-py TokenType)
TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE = 1, 2, 3, 4, 5, 6

# The Llama-3 pre-tokenizer regex (facts/formats.md §7; llama.cpp LLAMA_VOCAB_PRE_TYPE_LLAMA3)
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# llama.cpp's pre-tokenizer names that use the Llama-3 regex (src/llama-vocab.cpp)
LLAMA3_PRES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
               "midm-2.0", "lfm2", "jina-v5-nano")


def _meta_list(meta, key, source, n=None, kind="string"):
    v = meta.get(key)
    if v is None:
        return None
    if kind == "string":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise FormatError(f"{source}: {key} must be an array of strings")
    else:
        if not isinstance(v, np.ndarray) or v.ndim != 1 or not (
                np.issubdtype(v.dtype, np.integer) if kind == "int" else
                np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
            raise FormatError(f"{source}: {key} must be an array of {kind}s")
    if n is not None and len(v) != n:
        raise FormatError(f"{source}: {key} has {len(v)} entries, tokenizer.ggml.tokens has {n}")
    return v


def _meta_id(meta, key, source, n):
    v = meta.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
        raise FormatError(f"{source}: {key} = {v!r} is not a token id in [0, {n})")
    return v


def read_tokenizer(meta: dict, source: str = "<gguf>") -> Tokenizer:
    """A minibit Tokenizer from GGUF metadata (``tokenizer.ggml.*``), as llama.cpp builds its vocab.

    ``meta`` maps keys to values as ``GGUFFile.fields`` holds them.  model "gpt2": byte-level
    BPE from tokens + merges; the pre-tokenizer named by tokenizer.ggml.pre ("llama-bpe" and
    its aliases: the Llama-3 regex; anything else: GPT-2's regex).  model "llama":
    SentencePiece-style BPE, merges rebuilt from the scores (a merge's rank = its result's
    score, as llama.cpp's SPM tokenizer ranks bigrams), byte fallback, "▁" for spaces.
    CONTROL tokens become special tokens, USER_DEFINED ones added tokens.  Other models raise
    FormatError.
    """
    tk, bos, eos_ids, add_bos = tokenizer_from_meta(meta, source)
    return Tokenizer(tk, bos, eos_ids, add_bos, source=source)


def tokenizer_from_meta(meta: dict, source: str = "<gguf>"):
    """(tokenizers.Tokenizer, bos_id, eos_ids, add_bos) from tokenizer.ggml.* metadata: the
    body of ``read_tokenizer``."""
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as _TK
    from tokenizers.models import BPE

    model = meta.get("tokenizer.ggml.model")
    if model is not None and not isinstance(model, str):
        raise FormatError(f"{source}: tokenizer.ggml.model must be a string")
    tokens = _meta_list(meta, "tokenizer.ggml.tokens", source)
    if not tokens:
        raise FormatError(f"{source}: no tokenizer.ggml.tokens")
    n = len(tokens)
    types = _meta_list(meta, "tokenizer.ggml.token_type", source, n, "int")
    if types is None:
        types = np.full(n, TT_NORMAL, np.int32)
    pre = meta.get("tokenizer.ggml.pre")
    pre = pre if isinstance(pre, str) else None
    vocab: dict = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)                      # a duplicate keeps its first id
    if model == "gpt2":
        merges = _meta_list(meta, "tokenizer.ggml.merges", source)
        if merges is None:
            raise FormatError(f"{source}: a 'gpt2' tokenizer needs tokenizer.ggml.merges")
        pairs = []
        for j, mg in enumerate(merges):
            k = mg.find(" ", 1)                      # llama.cpp: the first space after byte 0
            if k < 0:
                raise FormatError(f"{source}: tokenizer.ggml.merges[{j}] = {mg!r} has no space")
            pairs.append((mg[:k], mg[k + 1:]))
        llama3 = pre in LLAMA3_PRES
        try:
            bpe = BPE(vocab, pairs, ignore_merges=llama3)
        except Exception as e:                       # the library's own check of merges vs vocab
            raise FormatError(f"{source}: tokenizer.ggml.merges do not fit the tokens ({e})") from None
        tk = _TK(bpe)
        if llama3:
            tk.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        else:                                        # "gpt-2", "default", unnamed: GPT-2's regex
            tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
        add_bos_default = llama3
    elif model == "llama":
        scores = _meta_list(meta, "tokenizer.ggml.scores", source, n, "float")
        if scores is None:
            raise FormatError(f"{source}: a 'llama' (SentencePiece) tokenizer needs "
                              f"tokenizer.ggml.scores")
        scores = np.asarray(scores, dtype=np.float64)
        mergeable = {t for t, i in vocab.items() if types[i] in (TT_NORMAL, TT_USER_DEFINED)}
        cand = []
        for t in mergeable:
            for k in range(1, len(t)):
                a, b = t[:k], t[k:]
                if a in mergeable and b in mergeable:
                    cand.append((-scores[vocab[t]], vocab[a], vocab[b], a, b))
        cand.sort()
        unk = next((tokens[i] for i in range(n) if types[i] == TT_UNKNOWN), None)
        try:
            bpe = BPE(vocab, [(a, b) for *_, a, b in cand], unk_token=unk, fuse_unk=True,
                      byte_fallback=True)
        except Exception as e:
            raise FormatError(f"{source}: cannot build the SentencePiece vocabulary ({e})") from None
        tk = _TK(bpe)
        space = meta.get("tokenizer.ggml.add_space_prefix", True)
        norms = [normalizers.Replace(" ", "\u2581")]
        if space is True:
            norms.insert(0, normalizers.Prepend("\u2581"))
        tk.normalizer = normalizers.Sequence(norms)
        tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                        decoders.Fuse()] +
                                       ([decoders.Strip(" ", 1, 0)] if space is True else []))
        add_bos_default = True
    else:
        raise FormatError(f"{source}: tokenizer model {model!r} is not supported "
                          f"(expected 'gpt2' or 'llama')")
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i in range(n) if types[i] == TT_CONTROL and vocab[tokens[i]] == i]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i in range(n) if types[i] == TT_USER_DEFINED and vocab[tokens[i]] == i]
    if special:
        tk.add_special_tokens(special)
    if user:
        tk.add_tokens(user)
    bos = _meta_id(meta, "tokenizer.ggml.bos_token_id", source, n)
    eos = _meta_id(meta, "tokenizer.ggml.eos_token_id", source, n)
    eot = _meta_id(meta, "tokenizer.ggml.eot_token_id", source, n)
    eos_ids = [e for e in dict.fromkeys((eos, eot)) if e is not None]
    add_bos = meta.get("tokenizer.ggml.add_bos_token", add_bos_default)
    if not isinstance(add_bos, bool):
        raise FormatError(f"{source}: tokenizer.ggml.add_bos_token must be a bool, got {add_bos!r}")
    return tk, bos, eos_ids, bool(add_bos and bos is not None)


def tokenizer_meta(model) -> dict:
    """tokenizer.ggml.* values for the model's tokenizer (the model's tokenizer.json as
    ``tokenizers`` holds it), the way llama.cpp's converters write them:

    byte-level BPE (ByteLevel pre-tokenizer)      -> model "gpt2": tokens, token types, merges,
                                                     pre ("gpt-2", "llama-bpe", else "default")
    SentencePiece-style BPE (byte_fallback, "▁")  -> model "llama": tokens, token types, scores
                                                     (a merge result scores -its merge rank, so
                                                     llama.cpp's score-ranked bigrams merge in
                                                     the tokenizer.json's order), add_space_prefix
    Ids missing from the tokenizer up to the embedding's rows become "[PAD{i}]" UNUSED tokens,
    as llama.cpp's converter pads them (llama.cpp needs one token per embedding row).
    """
    import json
    import re

    tok = model.tokenizer
    if tok is None:
        raise FormatError("the model has no tokenizer; llama.cpp needs tokenizer.ggml.* "
                          "metadata to load a GGUF file")
    tk = tok._tk
    spec = json.loads(tk.to_str())
    m = spec.get("model") or {}
    if m.get("type") != "BPE":
        raise FormatError(f"tokenizer model {m.get('type')!r}: only BPE tokenizers can be "
                          f"written to GGUF")
    pre = _pre_name(spec.get("pre_tokenizer"))
    spm_space = _spm_space(spec)
    if pre is None and spm_space is None:
        raise FormatError("only byte-level BPE tokenizers (GGUF model 'gpt2') and "
                          "SentencePiece-style BPE tokenizers (byte_fallback, '\u2581' for "
                          "spaces; GGUF model 'llama') can be written to GGUF")
    vocab = tk.get_vocab(with_added_tokens=False)
    added = tk.get_added_tokens_decoder()                     # {id: AddedToken}
    n = max(model.config.vocab_size, max(list(vocab.values()) + list(added) + [-1]) + 1)
    tokens = [None] * n
    types = [TT_UNUSED] * n
    byte_re = re.compile(r"<0x[0-9A-F]{2}>")
    for t, i in vocab.items():
        tokens[i], types[i] = t, TT_NORMAL
        if pre is None and byte_re.fullmatch(t):
            types[i] = TT_BYTE
    if pre is None and m.get("unk_token") in vocab:
        types[vocab[m["unk_token"]]] = TT_UNKNOWN
    for i, at in added.items():
        tokens[i] = at.content
        types[i] = TT_CONTROL if at.special else TT_USER_DEFINED
    for i in range(n):
        if tokens[i] is None:                 # as llama.cpp's converter pads: [PAD{i}] UNUSED
            tokens[i] = f"[PAD{i}]"
    pairs = [tuple(mg.split(" ", 1)) if isinstance(mg, str) else tuple(mg)
             for mg in m.get("merges") or []]
    out = dict(tokens=tokens, types=types, bos=tok.bos_id)
    if pre is not None:
        out.update(model="gpt2", pre=pre, merges=[f"{a} {b}" for a, b in pairs])
    else:
        rank: dict = {}
        for r, (a, b) in enumerate(pairs):
            rank.setdefault(a + b, r)
        scores = [0.0] * n
        for i, t in enumerate(tokens):
            if types[i] == TT_NORMAL and len(t) > 1 and not byte_re.fullmatch(t):
                scores[i] = -float(rank.get(t, 1e9))
        out.update(model="llama", scores=scores, add_space_prefix=spm_space)
    probe = tok.encode("a", bos=True)
    out["add_bos"] = bool(tok.bos_id is not None and probe and probe[0] == tok.bos_id)
    eos = next((e for e in model.config.eos_token_ids), None)
    if eos is None and tok.eos_ids:
        eos = tok.eos_ids[0]
    out["eos"] = eos
    out["eot"] = tk.token_to_id("<|eot_id|>")
    return out


def _spm_space(spec: dict) -> bool | None:
    """For a SentencePiece-style BPE tokenizer.json (byte_fallback, spaces as "▁"): whether a
    "▁" is prepended (llama.cpp's add_space_prefix); None for any other tokenizer."""
    m = spec.get("model") or {}
    if not m.get("byte_fallback"):
        return None
    norm = spec.get("normalizer") or {}
    items = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    repl = any(n.get("type") == "Replace" and (n.get("pattern") or {}).get("String") == " "
               and n.get("content") == "\u2581" for n in items)
    prepend = any(n.get("type") == "Prepend" and n.get("prepend") == "\u2581" for n in items)
    ms = spec.get("pre_tokenizer") or {}
    if ms.get("type") == "Metaspace" and ms.get("replacement") == "\u2581":
        return ms.get("prepend_scheme", "always") != "never"
    return prepend if repl else None


def _pre_name(pre) -> str | None:
    """llama.cpp's tokenizer.ggml.pre name for a tokenizer.json pre_tokenizer, or None when it
    is not byte-level; "default" (with a warning) for byte-level splits llama.cpp does not name."""
    if not isinstance(pre, dict):
        return None
    if pre.get("type") == "ByteLevel":
        return "gpt-2" if pre.get("use_regex", True) else "default"
    if pre.get("type") == "Sequence":
        items = pre.get("pretokenizers") or []
        if not items or items[-1].get("type") != "ByteLevel":
            return None
        splits = [p for p in items[:-1] if p.get("type") == "Split"]
        if len(splits) == 1 and len(items) == 2 and not items[-1].get("use_regex", True):
            pat = (splits[0].get("pattern") or {}).get("Regex")
            if pat == LLAMA3_REGEX:
                return "llama-bpe"
        warnings.warn("the tokenizer's pre-tokenizer has no llama.cpp name; writing 'default' "
                      "(llama.cpp will split text differently)", stacklevel=3)
        return "default"
    return None
