"""Token counting in a named tokenizer, per text and per word.

Budgets and figures mean nothing without saying whose tokens they are, so every count names its tokenizer.
Per-word costs come from one pass over the whole text (offsets map each token to the word holding its last
character), so they sum to the text's exact count and cost no more than tokenizing it once.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

import numpy as np

from .words import Words


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...

    def word_costs(self, words: Words) -> np.ndarray: ...


class WordCounter:
    """Whitespace words: the unit the reference design counted in; needs no model."""

    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())

    def word_costs(self, words: Words) -> np.ndarray:
        return np.ones(len(words), dtype=np.int64)


def _costs_from_token_ends(words: Words, token_ends: np.ndarray) -> np.ndarray:
    # The word holding a token's last character owns it; whitespace-only tokens go to the word before them.
    owner = np.searchsorted(words.starts, token_ends - 1, side="right") - 1
    owner = np.clip(owner, 0, len(words) - 1)
    return np.bincount(owner, minlength=len(words)).astype(np.int64)


class HFTokenCounter:
    """Any Hugging Face tokenizer: an embedded alias, a hub id or a local folder.

    A folder with a ``tokenizer.json`` (every embedded alias) is read by the Rust ``tokenizers`` library
    directly: the same fast tokenizer transformers would wrap, without importing torch and transformers, which
    cost seconds per process for milliseconds of counting. Anything else goes through transformers.
    """

    def __init__(self, spec: str) -> None:
        from .models import load_tokenizer, resolve

        self.name = spec
        self._fast = None
        folder = resolve(spec)
        if os.path.isfile(os.path.join(folder, "tokenizer.json")):
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        else:
            self._tok = load_tokenizer(spec)

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._fast is not None:
            return len(self._fast.encode(text, add_special_tokens=False).ids)
        return len(self._tok(text, add_special_tokens=False, verbose=False)["input_ids"])

    def word_costs(self, words: Words) -> np.ndarray:
        if len(words) == 0:
            return np.zeros(0, dtype=np.int64)
        if self._fast is not None:
            offsets = self._fast.encode(words.text, add_special_tokens=False).offsets
        else:
            offsets = self._tok(words.text, add_special_tokens=False, return_offsets_mapping=True,
                                verbose=False)["offset_mapping"]
        ends = np.asarray([end for _, end in offsets], dtype=np.int64)
        return _costs_from_token_ends(words, ends)


class TiktokenCounter:
    """OpenAI encodings (``tiktoken:cl100k_base``, ``tiktoken:o200k_base``) for exact OpenAI budgets."""

    def __init__(self, encoding: str) -> None:
        try:
            import tiktoken
        except ImportError as err:  # optional: only users who ask for it need it
            raise ValueError(f"tokenizer 'tiktoken:{encoding}' needs the tiktoken package; pip install tiktoken") from err
        self.name = f"tiktoken:{encoding}"
        self._enc = tiktoken.get_encoding(encoding)

    def count(self, text: str) -> int:
        return len(self._enc.encode_ordinary(text))

    def word_costs(self, words: Words) -> np.ndarray:
        if len(words) == 0:
            return np.zeros(0, dtype=np.int64)
        tokens = self._enc.encode_ordinary(words.text)
        # token byte lengths -> character ends; decode each token's bytes once to know its length in characters
        ends, pos, buf = [], 0, b""
        for tok in tokens:
            buf += self._enc.decode_single_token_bytes(tok)
            try:
                pos += len(buf.decode("utf-8"))
                buf = b""
            except UnicodeDecodeError:  # a character split across tokens: it ends with a later token
                pass
            ends.append(max(pos, 1))
        return _costs_from_token_ends(words, np.asarray(ends, dtype=np.int64))


_COUNTERS: dict[str, TokenCounter] = {}
_LOCK = threading.Lock()


def get_counter(spec: str) -> TokenCounter:
    """A shared counter for ``spec`` (tokenizers are loaded once per process and are safe to share)."""
    with _LOCK:
        counter = _COUNTERS.get(spec)
        if counter is None:
            if spec == "words":
                counter = WordCounter()
            elif spec.startswith("tiktoken:"):
                counter = TiktokenCounter(spec.split(":", 1)[1])
            else:
                counter = HFTokenCounter(spec)
            _COUNTERS[spec] = counter
        return counter
