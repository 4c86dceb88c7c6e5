"""Fixtures for metric tests: real MusicQA-style text and tiny local RoBERTa model folders."""

import json
from pathlib import Path

import pytest

# MusicQA-style sentences to train a real byte-level BPE on (words start and end sentences).
BPE_CORPUS = [
    "The audio is an alternative rock post-rock electronic experimental track.",
    "The music has a slow tempo with a melancholic piano melody and soft strings.",
    "The mood of the audio is energetic and uplifting.",
    "The main instrument is the acoustic guitar.",
    "It features drums, bass and a distorted electric guitar playing power chords!",
    "This is an experimental electronic rock track.",
    "A slow, sad piano melody with strings in the background.",
    "Drums, bass, and guitars are playing. The mood is happy.",
    "Music with a fast tempo: drums and bass play a dance beat while the synth plays chords.",
    "Piano and strings play a slow melody; the guitar is quiet and the mood is sad.",
]


def _tiny_roberta(d: Path, vocab: dict, merges: list) -> Path:
    import torch
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    tok = RobertaTokenizer(vocab=vocab, merges=merges)
    tok.model_max_length = 512
    tok.save_pretrained(d)
    cfg = RobertaConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=600)
    torch.manual_seed(0)
    RobertaModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def bpe_roberta_dir(tmp_path_factory) -> Path:
    """A tiny random RoBERTa whose tokenizer is a REAL byte-level BPE (vocab + merges) trained
    offline with `tokenizers` on MusicQA-style text, saved as a local model folder."""
    from tokenizers import ByteLevelBPETokenizer

    d = tmp_path_factory.mktemp("bpe_roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(BPE_CORPUS * 4, vocab_size=420, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(d))
    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in
              (d / "merges.txt").read_text(encoding="utf-8").splitlines()[1:] if line.strip()]
    return _tiny_roberta(d, vocab, merges)
