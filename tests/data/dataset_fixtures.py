"""Shared by the data-pipeline tests: a word-level stand-in tokenizer (so expected ids can be
computed by hand) and tiny file writers. The `root` fixture using them is in conftest.py."""

from __future__ import annotations

import json
from pathlib import Path


class WordTokenizer:
    """Stand-in for llama.tokenizer.Tokenizer: one id per whitespace word, [AUDk] -> its id."""

    bos_id, eos_id, pad_id = 1, 2, 0
    base_vocab_size = 500

    def __init__(self) -> None:
        self.aud_ids = [self.base_vocab_size + k for k in range(8)]
        self.vocab_size = self.base_vocab_size + 8
        self._ids: dict[str, int] = {f"[AUD{k}]": self.aud_ids[k] for k in range(8)}
        self._words: dict[int, str] = {v: k for k, v in self._ids.items()}

    def _id(self, w: str) -> int:
        if w not in self._ids:
            i = 3 + len(self._words) - 8
            assert i < self.base_vocab_size
            self._ids[w] = i
            self._words[i] = w
        return self._ids[w]

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = [self._id(w) for w in text.split()]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids, skip_special: bool = True) -> str:
        return " ".join(self._words[i] for i in ids if i >= 3 and i not in self.aud_ids)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"media")
    return str(path)
