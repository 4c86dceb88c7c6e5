"""LLaMA tokenizer with the eight `[AUD0]`..`[AUD7]` output tokens.

`load_tokenizer(path)` accepts a SentencePiece `tokenizer.model`, a folder of Hugging Face tokenizer
files (or one holding `tokenizer.model`), or `"tiny"`: a small SentencePiece model trained here,
deterministically, from `assets/tiny_tokenizer_corpus.txt` (which covers every attribute word of
the synthetic datasets) plus the pinned chat template (`llama.chat_style.FIRST_STYLE`: a new
default style must not change the vocabulary trained tiny checkpoints depend on) around a few
fixed requests. The tiny model is cached in `ckpts/tiny/tokenizer/` next to a fingerprint of its
recipe, so a changed corpus or option rebuilds it.

The [AUD] tokens are appended after the base vocabulary (ids base_vocab_size + 0..7, i.e.
32000..32007 for LLaMA-2); growing the backbone's embedding rows is the backbone's job
(`Transformer.add_tokens`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from llama.config import AUD_TOKENS
from llama.chat_style import FIRST_STYLE
from util.atomic import atomic_path, write_text
from util.hashing import sha256_text

__all__ = [
    "TINY_VOCAB_SIZE",
    "Tokenizer",
    "TokenizerError",
    "load_tokenizer",
    "tiny_corpus",
    "tiny_tokenizer_path",
]

TINY_VOCAB_SIZE = 1000  # must equal llama_tiny().vocab_size (the backbone's base vocabulary)

_REPO_ROOT = Path(__file__).resolve().parents[1]
_CORPUS_FILE = _REPO_ROOT / "assets" / "tiny_tokenizer_corpus.txt"
_TINY_CACHE_DIR = _REPO_ROOT / "ckpts" / "tiny" / "tokenizer"

# SentencePiece options of the tiny model: LLaMA's own choices (BPE, byte fallback, digits split,
# no normalisation, unk/bos/eos = 0/1/2, no pad piece), single-threaded so training is
# deterministic.
_TINY_SPM_OPTIONS: dict[str, object] = dict(
    model_type="bpe",
    vocab_size=TINY_VOCAB_SIZE,
    byte_fallback=True,
    split_digits=True,
    character_coverage=1.0,
    normalization_rule_name="identity",
    add_dummy_prefix=True,
    remove_extra_whitespaces=False,
    allow_whitespace_only_pieces=True,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    num_threads=1,
    seed_sentencepiece_size=100000,
    shuffle_input_sentence=False,
    input_sentence_size=0,
    max_sentence_length=4096,
    hard_vocab_limit=True,
    minloglevel=2,
)


class TokenizerError(ValueError):
    """A tokenizer file or folder is missing, unreadable or lacks a required piece."""


class Tokenizer:
    """A transformers LLaMA tokenizer plus the [AUD] tokens, with the ids callers need at hand."""

    def __init__(self, hf, source: str) -> None:
        self.hf = hf
        self.source = source
        if hf.bos_token_id is None or hf.eos_token_id is None:
            missing = "BOS" if hf.bos_token_id is None else "EOS"
            raise TokenizerError(f"{source}: tokenizer has no {missing} piece")
        self.bos_id: int = int(hf.bos_token_id)
        self.eos_id: int = int(hf.eos_token_id)
        self.pad_id: int = int(hf.pad_token_id) if hf.pad_token_id is not None else (
            int(hf.unk_token_id) if hf.unk_token_id is not None else 0
        )
        self.base_vocab_size, self.aud_ids = _add_aud_tokens(hf, source)
        self.vocab_size: int = self.base_vocab_size + len(AUD_TOKENS)
        self._special_ids = frozenset(
            {self.bos_id, self.eos_id, self.pad_id, *self.aud_ids, *hf.all_special_ids}
        )
        space_id = hf.convert_tokens_to_ids("\u2581")
        self._space_id: int | None = space_id if space_id != hf.unk_token_id else None
        pre = hf.backend_tokenizer.pre_tokenizer if hasattr(hf, "backend_tokenizer") else None
        self._metaspace_first = (
            type(pre).__name__ == "Metaspace" and getattr(pre, "prepend_scheme", "") == "first"
        )

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`; each "[AUDk]" inside it becomes its single id."""
        if self._metaspace_first and text.startswith(" "):
            # SentencePiece always adds its dummy-prefix space; transformers' Metaspace skips it
            # when the text already starts with one. Adding it here keeps Meta's ids exactly.
            text = " " + text
        ids = list(self.hf.encode(text, add_special_tokens=False))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of `ids`; with `skip_special`, BOS/EOS/pad/[AUD] ids vanish leaving no spaces."""
        ids = [int(i) for i in ids]
        if not skip_special:
            return self.hf.decode(ids, skip_special_tokens=False)
        kept: list[int] = []
        for pos, i in enumerate(ids):
            if i in self._special_ids:
                continue
            # The space of " [AUD0]" is a lone piece: it goes with the special token it precedes.
            nxt = ids[pos + 1] if pos + 1 < len(ids) else None
            if i == self._space_id and nxt is not None and nxt in self._special_ids:
                continue
            kept.append(i)
        return self.hf.decode(kept, skip_special_tokens=False)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(source={self.source!r}, base_vocab_size={self.base_vocab_size}, "
            f"bos={self.bos_id}, eos={self.eos_id}, pad={self.pad_id}, aud_ids={self.aud_ids})"
        )


def _add_aud_tokens(hf, source: str) -> tuple[int, list[int]]:
    """Append [AUD0..7] as special added tokens; accept a folder already ending with them."""
    from tokenizers import AddedToken

    vocab = hf.get_vocab()
    present = [t for t in AUD_TOKENS if t in vocab]
    if present:
        ids = [vocab[t] for t in AUD_TOKENS] if len(present) == len(AUD_TOKENS) else None
        total = len(hf)
        if ids is None or ids != list(range(total - len(AUD_TOKENS), total)):
            raise TokenizerError(
                f"{source}: tokenizer already holds {present} but not as the last "
                f"{len(AUD_TOKENS)} ids in order; cannot place [AUD0]..[AUD7]"
            )
        return total - len(AUD_TOKENS), ids
    base = len(hf)
    tokens = [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False)
              for t in AUD_TOKENS]
    hf.add_special_tokens({"additional_special_tokens": tokens}, replace_extra_special_tokens=False)
    ids = hf.convert_tokens_to_ids(list(AUD_TOKENS))
    if ids != list(range(base, base + len(AUD_TOKENS))):
        raise TokenizerError(f"{source}: [AUD] tokens got ids {ids}, expected {base}..{base + 7}")
    return base, ids


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a LLaMA tokenizer from `tokenizer.model`, an HF tokenizer folder, or "tiny"."""
    if str(path) == "tiny":
        path = tiny_tokenizer_path()
    path = Path(path)
    if path.is_file():
        _check_sentencepiece(path)
        # from_pretrained needs a folder; a private one keeps unrelated files beside the model out.
        with tempfile.TemporaryDirectory(prefix="m2ugen-tok-") as tmp:
            os.symlink(path.resolve(), Path(tmp) / "tokenizer.model")
            hf = _from_pretrained(tmp, path)
        return Tokenizer(hf, str(path))
    if path.is_dir():
        names = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"}
        if not any((path / n).is_file() for n in names):
            raise TokenizerError(
                f"{path}: folder holds no tokenizer files (expected one of {sorted(names)})"
            )
        if (path / "tokenizer.model").is_file() and not (path / "tokenizer.json").is_file():
            _check_sentencepiece(path / "tokenizer.model")
        return Tokenizer(_from_pretrained(str(path), path), str(path))
    raise TokenizerError(f"{path}: no such tokenizer file or folder")


def _from_pretrained(folder: str, shown: Path):
    from transformers import AutoTokenizer, LlamaTokenizer

    try:
        if (Path(folder) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(folder)
        return LlamaTokenizer.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, TypeError) as err:
        raise TokenizerError(f"{shown}: cannot load tokenizer: {err}") from err


def _check_sentencepiece(model_file: Path) -> None:
    """Fail early, naming the file, on an unreadable model or one lacking UNK/BOS/EOS pieces."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(model_file))
    except (OSError, RuntimeError) as err:
        raise TokenizerError(f"{model_file}: not a readable SentencePiece model ({err})") from err
    for name, idx in (("UNK", sp.unk_id()), ("BOS", sp.bos_id()), ("EOS", sp.eos_id())):
        if idx < 0:
            raise TokenizerError(f"{model_file}: SentencePiece model has no {name} piece")


# ---------------------------------------------------------------------------------------------
# The tiny tokenizer


_REQUESTS = (
    "Generate a music clip for this image.",
    "Compose a song that matches the video.",
    "Play a sound that fits the picture.",
    "Describe the music.",
    "What instrument is playing?",
    "Is the tempo slow or fast?",
    "Which register is the melody in?",
    "Describe the image.",
    "Describe the video clip.",
)


def tiny_corpus() -> str:
    """The training text of the tiny tokenizer: the asset file (minus its "# " comment lines)
    plus the pinned chat template (`FIRST_STYLE`) around a few fixed requests."""
    try:
        text = _CORPUS_FILE.read_text(encoding="utf-8")
    except OSError as err:
        raise TokenizerError(f"{_CORPUS_FILE}: cannot read tiny tokenizer corpus ({err})") from err
    lines = [line for line in text.splitlines() if not line.startswith("# ")]
    for request in _REQUESTS:
        lines.append(FIRST_STYLE.format_prompt(request) + " Here is the music.")
    return "\n".join(lines) + "\n"


def _tiny_fingerprint(corpus: str) -> str:
    return sha256_text(repr(sorted(_TINY_SPM_OPTIONS.items())) + "\n" + corpus)


def _train_tiny(out_dir: Path, corpus: str) -> Path:
    """Train the tiny SentencePiece model into `out_dir/tokenizer.model` (atomically replaced)."""
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "tokenizer.model"
    with tempfile.TemporaryDirectory(prefix=".tok-train-", dir=out_dir) as tmp:
        corpus_file = Path(tmp) / "corpus.txt"
        corpus_file.write_text(corpus, encoding="utf-8")
        prefix = Path(tmp) / "tokenizer"
        spm.SentencePieceTrainer.Train(
            input=str(corpus_file), model_prefix=str(prefix), **_TINY_SPM_OPTIONS
        )
        with atomic_path(target) as dst_tmp:
            os.replace(f"{prefix}.model", dst_tmp)
    return target


def tiny_tokenizer_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the tiny `tokenizer.model`, training it first when missing or stale.

    Cached in `ckpts/tiny/tokenizer/` (git-ignored) with a recipe fingerprint; when that folder is
    not writable the model is built in a fresh temporary folder instead.
    """
    corpus = tiny_corpus()
    fingerprint = _tiny_fingerprint(corpus)
    folder = Path(cache_dir) if cache_dir is not None else _TINY_CACHE_DIR
    model, stamp = folder / "tokenizer.model", folder / "recipe.sha256"
    if model.is_file() and stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return model
    try:
        _train_tiny(folder, corpus)
        write_text(stamp, fingerprint + "\n")
        return model
    except OSError:  # read-only checkout: build in a private temporary folder
        return _train_tiny(Path(tempfile.mkdtemp(prefix="m2ugen-tiny-tok-")), corpus)
