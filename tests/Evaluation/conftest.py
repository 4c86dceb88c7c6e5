"""Fixtures of the music-generation evaluation tests: tiny random scoring models saved as local
folders (CLAP, AST, BLIP, EnCodec), so `score` runs its real loading code offline in seconds."""

from pathlib import Path

import pytest


def _clap(d: Path, max_positions: int = 64) -> None:
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel,
                              ClapProcessor, ClapTextConfig, RobertaTokenizer)

    text = ClapTextConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=16,
                          max_position_embeddings=max_positions, projection_dim=8)
    audio = ClapAudioConfig(spec_size=256, window_size=8, num_mel_bins=64,
                            patch_embeds_hidden_size=8, hidden_size=16, depths=[1, 1],
                            num_heads=[1, 1], patch_stride=(4, 4), projection_dim=8)
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(),
                         projection_dim=8)).save_pretrained(d)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in "abcdefghijklmnopqrstuvwxyz ":
        vocab.setdefault(ch, len(vocab))
    ClapProcessor(feature_extractor=ClapFeatureExtractor(feature_size=64, truncation="rand_trunc"),
                  tokenizer=RobertaTokenizer(vocab=vocab, merges=[])).save_pretrained(d)


def _ast(d: Path) -> None:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    cfg = ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=16, max_length=100, num_mel_bins=32, num_labels=527)
    ASTForAudioClassification(cfg).save_pretrained(d)
    ASTFeatureExtractor(num_mel_bins=32, max_length=100).save_pretrained(d)


def _blip(d: Path) -> None:
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration,
                              BlipImageProcessor, BlipProcessor, BlipTextConfig,
                              BlipVisionConfig)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    text = BlipTextConfig(vocab_size=len(words), hidden_size=16, encoder_hidden_size=16,
                          num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                          max_position_embeddings=64, bos_token_id=2, sep_token_id=3,
                          pad_token_id=0, eos_token_id=3)
    vision = BlipVisionConfig(hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                              num_attention_heads=2, image_size=32, patch_size=8)
    BlipForConditionalGeneration(BlipConfig(text_config=text.to_dict(),
                                            vision_config=vision.to_dict(),
                                            projection_dim=8)).save_pretrained(d)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                  tokenizer=BertTokenizer(str(d / "vocab.txt"))).save_pretrained(d)


def _encodec(d: Path) -> None:
    from transformers import EncodecConfig, EncodecModel

    EncodecModel(EncodecConfig(sampling_rate=16000, hidden_size=8, num_filters=4,
                               upsampling_ratios=[4, 4], codebook_size=16, codebook_dim=8,
                               num_lstm_layers=1)).save_pretrained(d)


@pytest.fixture(scope="session")
def scoring_models(tmp_path_factory) -> dict[str, Path]:
    """{"clap", "ast", "blip", "encodec"}: local folders of tiny random models."""
    import torch

    root = tmp_path_factory.mktemp("scoring_models")
    out = {}
    for name, build in (("clap", _clap), ("ast", _ast), ("blip", _blip), ("encodec", _encodec)):
        torch.manual_seed(0)
        out[name] = root / name
        build(out[name])
    return out


@pytest.fixture(scope="session")
def clap_text_dir(tmp_path_factory) -> Path:
    """A tiny random ClapModel folder whose text tower takes LAION-CLAP's 77 tokens."""
    import torch

    d = tmp_path_factory.mktemp("clap_text")
    torch.manual_seed(0)
    _clap(d, max_positions=80)
    return d
