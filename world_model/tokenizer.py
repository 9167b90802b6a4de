"""Tokenizers: the real umt5 tokenizer from a local folder, or a deterministic stand-in.

Tests and the ``tiny`` preset must never reach the hub, so :class:`HashTokenizer` mimics the call
signature of ``diffsynth.models.wan_video_text_encoder.HuggingfaceTokenizer`` (what
``WanVideoPipeline``'s prompt unit calls) with ids derived from sha256 of each word.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PAD_ID = 0
EOS_ID = 1
_FIRST_WORD_ID = 2


class HashTokenizer:
    """Whitespace tokenizer with ids = sha256(word) mod vocab; stable across runs and machines.

    ``__call__(prompts, return_mask=True, add_special_tokens=True)`` returns ``(ids, mask)`` of
    shape (B, seq_len), int64, padded with 0 and terminated by an EOS (1), like the umt5 tokenizer
    wrapper diffsynth uses.
    """

    def __init__(self, vocab_size: int, seq_len: int) -> None:
        if vocab_size <= _FIRST_WORD_ID:
            raise ValueError("vocab_size too small")
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.name = f"hash-tokenizer-v1-{vocab_size}-{seq_len}"

    def _word_id(self, word: str) -> int:
        digest = hashlib.sha256(word.encode("utf-8")).digest()
        return _FIRST_WORD_ID + int.from_bytes(digest[:8], "little") % (self.vocab_size - _FIRST_WORD_ID)

    def __call__(self, sequence: str | list[str], return_mask: bool = False,
                 add_special_tokens: bool = True, **_: object):
        prompts = [sequence] if isinstance(sequence, str) else list(sequence)
        ids = torch.full((len(prompts), self.seq_len), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(prompts), self.seq_len), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            toks = [self._word_id(w) for w in re.sub(r"\s+", " ", prompt).strip().lower().split(" ") if w]
            if add_special_tokens:
                toks = toks[: self.seq_len - 1] + [EOS_ID]
            toks = toks[: self.seq_len]
            ids[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            mask[i, : len(toks)] = 1
        return (ids, mask) if return_mask else ids


def load_umt5_tokenizer(folder: str | Path, seq_len: int):
    """The real umt5-xxl tokenizer from a local folder (``<weights>/google/umt5-xxl``), offline."""
    from diffsynth.models.wan_video_text_encoder import HuggingfaceTokenizer

    log.info("loading tokenizer from %s (local files only)", folder)
    return HuggingfaceTokenizer(name=str(folder), seq_len=seq_len, clean="whitespace",
                                local_files_only=True)
