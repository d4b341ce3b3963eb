"""Tokenizers: HF tokenizer.json through the `tokenizers` library, with BOS/EOS rules.

``Tokenizer.encode(text)`` returns ids the way the model was trained to see them: a BOS is
prepended when the model's tokenizer does so (tokenizer.json's post-processor for Llama 3
style files, or ``add_bos`` for files without one).  ``decode(ids)`` drops special tokens.
A GGUF file's tokenizer (``tokenizer.ggml.*`` metadata) is rebuilt by
``minibit.io.gguf.read_tokenizer`` into this same class.
"""

from __future__ import annotations

import os

from ._errors import FormatError

__all__ = ["Tokenizer"]

MAX_TOKENIZER_BYTES = 256 * 1024 * 1024


class Tokenizer:
    """A thin, documented wrapper over ``tokenizers.Tokenizer``.

    bos_id, eos_ids   the model's special ids (eos_ids: every id that ends generation)
    add_bos           whether encode() must prepend bos_id itself (when the tokenizer's
                      post-processor does not already)
    """

    def __init__(self, tk, bos_id=None, eos_ids=(), add_bos=None, source="<memory>"):
        self._tk = tk
        self.source = source
        self.bos_id = bos_id
        self.eos_ids = [int(e) for e in eos_ids]
        for name in ("<|eot_id|>", "<|im_end|>", "<|endoftext|>"):   # chat turn ends
            t = tk.token_to_id(name)
            if t is not None and t not in self.eos_ids:
                self.eos_ids.append(t)
        if add_bos is None:
            probe = tk.encode("a", add_special_tokens=True).ids
            add_bos = bos_id is not None and (not probe or probe[0] != bos_id)
        self.add_bos = bool(add_bos)

    @classmethod
    def from_file(cls, path: str, bos_id=None, eos_ids=(), add_bos=None) -> "Tokenizer":
        from tokenizers import Tokenizer as _TK

        try:
            size = os.path.getsize(path)
        except OSError:
            raise FormatError(f"{path}: tokenizer file not found") from None
        if size > MAX_TOKENIZER_BYTES:
            raise FormatError(f"{path}: {size} bytes, over the {MAX_TOKENIZER_BYTES}-byte limit")
        try:
            tk = _TK.from_file(path)
        except Exception as e:  # the library reports JSON and schema errors as Exception
            raise FormatError(f"{path}: not a valid tokenizer.json ({e})") from None
        return cls(tk, bos_id, eos_ids, add_bos, source=path)

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """Text -> ids; with bos=True the model's BOS is present exactly once at the start."""
        ids = self._tk.encode(text, add_special_tokens=bos).ids
        if bos and self.add_bos:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids, skip_special: bool = True) -> str:
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, token: str):
        return self._tk.token_to_id(token)

    def id_to_token(self, i: int):
        return self._tk.id_to_token(int(i))
