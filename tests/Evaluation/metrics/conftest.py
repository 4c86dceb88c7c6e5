"""Fixtures for metric tests: real MusicQA-style text and a tiny local BERTScore model folder."""

from pathlib import Path

import pytest

@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 3-layer random RoBERTa + character-level tokenizer saved as a local model folder."""
    import torch
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    d = tmp_path_factory.mktemp("tiny_roberta")
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?!'-")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for c in chars + ["\u0120" + c for c in chars]:
        vocab.setdefault(c, len(vocab))
    tok = RobertaTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = 512
    tok.save_pretrained(d)
    cfg = RobertaConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=600)
    torch.manual_seed(0)
    RobertaModel(cfg).save_pretrained(d)
    return d
