"""Tokenizer: [AUD] tokens, decode hygiene, loading forms, bad tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm
from transformers import LlamaTokenizer

from llama.config import AUD_TOKENS, llama_tiny
from llama.prompt import format_prompt
from llama.tokenizer import (
    Tokenizer,
    TokenizerError,
    load_tokenizer,
    tiny_corpus,
    tiny_tokenizer_path,
)

ATTRIBUTE_WORDS = (
    "piano organ flute guitar low high slow fast red green blue yellow small large brightening "
    "darkening music melody song instrument tempo register colour color image video picture clip "
    "bright dark generate compose play sound"
).split()


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(tiny_tokenizer_path()))


def test_tiny_sizes_and_ids(tok: Tokenizer) -> None:
    assert tok.base_vocab_size == llama_tiny().vocab_size == 1000
    assert tok.vocab_size == 1008 and len(tok) == 1008
    assert tok.aud_ids == list(range(1000, 1008))
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 0)


def test_aud_tokens_are_single_ids(tok: Tokenizer) -> None:
    for k, piece in enumerate(AUD_TOKENS):
        assert tok.encode(piece) == [1000 + k]
    ids = tok.encode("A slow piano melody. " + "".join(AUD_TOKENS), bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids[-9:-1] == tok.aud_ids
    assert sum(i >= 1000 for i in ids) == 8  # no byte pieces of "[AUD" leaked


def test_attribute_words_are_single_pieces(tok: Tokenizer) -> None:
    from data import synthetic

    vocab = (synthetic.INSTRUMENTS + synthetic.REGISTERS + synthetic.TEMPOS + synthetic.COLOURS
             + synthetic.SIZES + synthetic.BRIGHTNESS)
    multi = {w: tok.hf.convert_ids_to_tokens(tok.encode(w)) for w in (*ATTRIBUTE_WORDS, *vocab)
             if len(tok.encode(w)) != 1}
    assert not multi


def test_corpus_file_matches_the_synthetic_vocabularies() -> None:
    """The committed corpus is regenerated from data.synthetic (the vocabularies' one source)."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "assets" / "make_tiny_tokenizer_corpus.py"
    spec = importlib.util.spec_from_file_location("make_tiny_tokenizer_corpus", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = module.CORPUS.read_text(encoding="utf-8")
    assert module.render(current) == current, f"stale corpus: run {script}"
    corpus = tiny_corpus()
    assert "# " not in corpus.splitlines()[0] and not any(
        line.startswith("# ") for line in corpus.splitlines())
    assert "A slow piano melody in a low register." in corpus.splitlines()


def test_decode_drops_special_tokens_cleanly(tok: Tokenizer) -> None:
    text = "A slow piano melody."
    ids = tok.encode(text + " " + "".join(AUD_TOKENS), bos=True, eos=True)
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.pad_id, tok.pad_id]) == text
    raw = tok.decode(ids, skip_special=False)
    assert raw.startswith("<s>") and raw.endswith(text + " " + "".join(AUD_TOKENS) + "</s>"), raw
    assert tok.decode(tok.encode("Here:\n\n[AUD0] done", bos=True)) == "Here:\n\n done"


def test_matches_sentencepiece_ids(tok: Tokenizer, sp: spm.SentencePieceProcessor) -> None:
    for text in ["Play a fast guitar song.", " leading space", "  two", "a  b\n\nc ",
                 format_prompt("Make it brighter! 123"), "é😀 中文", ""]:
        assert tok.encode(text) == sp.encode(text), text
        assert tok.decode(tok.encode(text)) == sp.decode(sp.encode(text)), text


def test_loads_from_model_file_and_hf_folders(tok: Tokenizer, tmp_path: Path) -> None:
    model_file = tiny_tokenizer_path()
    text = "A bright red image and a slow organ " + AUD_TOKENS[3]
    expected = tok.encode(text, bos=True)
    # a folder holding only tokenizer.model
    (tmp_path / "spm").mkdir()
    (tmp_path / "spm" / "tokenizer.model").write_bytes(model_file.read_bytes())
    # an HF folder saved by transformers, without and with the [AUD] tokens
    plain = LlamaTokenizer.from_pretrained(tmp_path / "spm")
    plain.save_pretrained(tmp_path / "hf")
    tok.hf.save_pretrained(tmp_path / "hf_aud")
    for source in (model_file, tmp_path / "spm", tmp_path / "hf", tmp_path / "hf_aud"):
        other = load_tokenizer(source)
        assert other.encode(text, bos=True) == expected, source
        assert other.aud_ids == tok.aud_ids and other.base_vocab_size == 1000, source


def test_tokenizer_lacking_eos_names_the_file(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(tiny_corpus())
    spm.SentencePieceTrainer.Train(
        input=str(corpus), model_prefix=str(tmp_path / "noeos"), vocab_size=80, model_type="bpe",
        eos_id=-1, num_threads=1, minloglevel=2,
    )
    with pytest.raises(TokenizerError, match=r"noeos\.model: SentencePiece model has no EOS piece"):
        load_tokenizer(tmp_path / "noeos.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match=r"junk\.model: not a readable SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")
    with pytest.raises(TokenizerError, match="no such tokenizer"):
        load_tokenizer(tmp_path / "absent.model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="holds no tokenizer files"):
        load_tokenizer(tmp_path / "empty")


def _pieces(model_file: Path) -> list[tuple[str, float]]:
    """Pieces and scores (the model file itself also records its temporary training paths)."""
    proc = spm.SentencePieceProcessor(model_file=str(model_file))
    return [(proc.id_to_piece(i), proc.get_score(i)) for i in range(proc.get_piece_size())]


def test_tiny_training_is_deterministic_and_stale_cache_rebuilds(tmp_path: Path) -> None:
    a = tiny_tokenizer_path(tmp_path / "a")
    assert _pieces(a) == _pieces(tiny_tokenizer_path())
    (tmp_path / "a" / "recipe.sha256").write_text("stale\n")
    a.write_bytes(b"stale model")
    rebuilt = tiny_tokenizer_path(tmp_path / "a")
    assert _pieces(rebuilt) == _pieces(tiny_tokenizer_path())
    assert (tmp_path / "a" / "recipe.sha256").read_text().strip() != "stale"
