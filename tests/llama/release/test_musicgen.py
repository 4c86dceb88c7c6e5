"""A release file's own MusicGen weights run as the decoder (no MusicGen download needed)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest
import torch

from llama.decoders import DecoderLoadError, MusicGenDecoder, tiny_t5_tokenizer
from llama.release.export import write_imported
from llama.release.load import load_imported, load_release
from llama.release.musicgen import (
    PUBLISHED_SIZES,
    build_release_musicgen,
    published_musicgen_config,
    published_size,
)
from llama.release.read import read_release

REF = Path(__file__).resolve().parents[1] / "published_reference"
COMP = REF / "components"
N_TOKENS, WIDTH = 4, 16  # the reference release's projector output (tokens, width)


def _tiny_musicgen():
    """A working MusicGen (4 quantizers, 50 frames/s) whose T5 width fits the reference
    projector, with random codebooks so that codes matter."""
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, T5Config)

    tok = tiny_t5_tokenizer(N_TOKENS)
    t5 = T5Config(vocab_size=len(tok), d_model=WIDTH, d_ff=32, d_kv=8, num_heads=2, num_layers=1,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                  decoder_start_token_id=tok.pad_token_id, dropout_rate=0.0)
    enc = EncodecConfig(sampling_rate=32000, audio_channels=1, hidden_size=8, num_filters=2,
                        upsampling_ratios=[8, 5, 4, 4], codebook_size=16, codebook_dim=8,
                        num_lstm_layers=1, target_bandwidths=[0.8])
    dec = MusicgenDecoderConfig(vocab_size=16, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, ffn_dim=32, num_codebooks=4,
                                max_position_embeddings=64, dropout=0.0, pad_token_id=16,
                                bos_token_id=16)
    torch.manual_seed(5)
    model = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=t5, audio_encoder=enc,
                                                            decoder=dec)).eval()
    for name, buf in model.audio_encoder.named_buffers():
        if name.endswith("codebook.embed"):
            buf.copy_(torch.randn_like(buf))
    return model, tok


def _old_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weight-norm names as the published (older transformers) files store them."""
    return {k.replace("parametrizations.weight.original0", "weight_g")
             .replace("parametrizations.weight.original1", "weight_v"): v.clone()
            for k, v in sd.items()}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(release file holding the tiny MusicGen, config-only folder, the MusicGen, tokenizer)."""
    tmp = tmp_path_factory.mktemp("release_musicgen")
    musicgen, tok = _tiny_musicgen()
    state, args = read_release(REF / "m2ugen" / "checkpoint.pth")
    state = {k: v.clone() for k, v in state.items() if not k.startswith("generation_model.")}
    state.update({f"generation_model.{k}": v
                  for k, v in _old_names(musicgen.state_dict()).items()})
    path = tmp / "checkpoint.pth"
    torch.save({"model": state, "optimizer": {}, "epoch": 0, "scaler": {},
                "args": argparse.Namespace(**args)}, path)
    config_dir = tmp / "musicgen_config"
    musicgen.config.save_pretrained(config_dir)
    tok.save_pretrained(config_dir)
    return path, config_dir, musicgen, tok


def _load(path: Path, **kw):
    return load_release(path, llama_dir=str(COMP), mert_path=str(COMP / "mert"),
                        vit_path=str(COMP / "vit"), vivit_path=str(COMP / "vivit"), **kw)


def test_file_weights_run_as_the_decoder(release):
    path, config_dir, musicgen, tok = release
    model, report = _load(path, music_decoder_path=str(config_dir))
    assert not any("generation_model" in reason for reason in report.unused)
    dec = model.decoder
    assert isinstance(dec, MusicGenDecoder)
    for name, value in musicgen.state_dict().items():
        assert torch.equal(dec.model.state_dict()[name], value), name
    # Same audio as the MusicGen built directly, from states and from text.
    direct = MusicGenDecoder(model.cfg.decoder, musicgen, tok, "cpu", torch.float32)
    cond = torch.randn(2, N_TOKENS, WIDTH) * 10
    ours, sr = dec.synthesize(cond, seconds=0.1, seed=3)
    ref, _ = direct.synthesize(cond, seconds=0.1, seed=3)
    assert sr == 32000 and len(ours) == 2
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and (a == b).all()
    text, _ = dec.synthesize_from_text(["a fast piano melody"], seconds=0.1, seed=1)
    text_ref, _ = direct.synthesize_from_text(["a fast piano melody"], seconds=0.1, seed=1)
    assert (text[0] == text_ref[0]).all()


def test_without_a_tokenizer_only_the_text_route_fails(release, tmp_path, caplog):
    path, config_dir, _, _ = release
    bare = tmp_path / "config_only"
    bare.mkdir()
    (bare / "config.json").write_text((config_dir / "config.json").read_text())
    model, _ = _load(path, music_decoder_path=str(bare))
    with caplog.at_level(logging.WARNING, logger="llama.release.musicgen"):
        dec = model.decoder
    assert any("no T5 tokenizer" in r.message for r in caplog.records)
    waves, _ = dec.synthesize(torch.randn(1, N_TOKENS, WIDTH), seconds=0.1, seed=0)
    assert waves[0].shape == (3200,)
    with pytest.raises(DecoderLoadError, match="no T5 tokenizer") as err:
        dec.synthesize_from_text(["a slow flute"], seconds=0.1)
    assert str(bare) in str(err.value) and "\n" not in str(err.value)


def test_a_weights_folder_supersedes_the_file(release, tmp_path):
    path, _, musicgen, tok = release
    folder = tmp_path / "musicgen"
    musicgen.save_pretrained(folder)
    tok.save_pretrained(folder)
    model, report = _load(path, music_decoder_path=str(folder))
    assert model.decoder_factory is None
    assert any("superseded" in reason for reason in report.unused)
    assert isinstance(model.decoder, MusicGenDecoder)


def test_a_non_published_size_without_config_keeps_the_named_decoder():
    """The reference file's tiny MusicGen has no published shape: reported, decoder by path."""
    model, report = _load(REF / "m2ugen" / "checkpoint.pth")
    assert model.decoder_factory is None
    reasons = [r for r in report.unused if r.startswith("generation_model.*")]
    assert reasons and "no published MusicGen size" in reasons[0]


def test_wrong_config_names_the_key(release, tmp_path):
    path, config_dir, _, _ = release
    import json

    cfg = json.loads((config_dir / "config.json").read_text())
    cfg["decoder"]["ffn_dim"] = 48
    bad = tmp_path / "bad_config"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(cfg))
    state, _ = read_release(path)
    with pytest.raises(Exception, match=r"generation_model\.decoder\.model\.decoder\.layers\.0\."
                                        r"fc1\.weight has shape"):
        build_release_musicgen(state, str(path), str(bad), torch.float32)


@pytest.mark.parametrize("size", ["small", "medium"])
def test_published_configs(size):
    """The published shapes: t5-base (768 wide, 12 layers), EnCodec 32 kHz with 4 codebooks of
    2048 at 50 frames/s, and the decoder width/depth of each size; built on meta, no weights."""
    from accelerate import init_empty_weights
    from transformers import MusicgenForConditionalGeneration

    (width, layers), _ = next((k, v) for k, v in PUBLISHED_SIZES.items() if v[0] == size)
    state = {"generation_model.decoder.model.decoder.embed_tokens.0.weight":
             torch.empty(2049, width, device="meta")}
    state.update({f"generation_model.decoder.model.decoder.layers.{i}.fc1.weight":
                  torch.empty(1, device="meta") for i in range(layers)})
    assert published_size(state) == size
    cfg = published_musicgen_config(state, "x.pth")
    assert cfg.audio_encoder.frame_rate == 50 and cfg.audio_encoder.num_quantizers == 4
    assert cfg.text_encoder.d_model == 768 and cfg.text_encoder.num_layers == 12
    with init_empty_weights():
        model = MusicgenForConditionalGeneration(cfg)
    t5 = sum(p.numel() for n, p in model.text_encoder.named_parameters()
             if n != "encoder.embed_tokens.weight")  # the shared table, tied in the real model
    assert 105e6 < t5 < 115e6  # t5-base's encoder: about 110M parameters
    assert model.decoder.model.decoder.embed_tokens[0].weight.shape == (2049, width)
    assert len(model.decoder.model.decoder.layers) == layers


def test_import_keeps_the_file_musicgen(release, tmp_path):
    """Import (`llama.import_published` = load_release + `write_imported`) writes the file's
    MusicGen as a folder the imported checkpoint loads (same weights, tokenizer included if
    found)."""
    path, config_dir, musicgen, _ = release
    model, report = _load(path, music_decoder_path=str(config_dir))
    dst = write_imported(model, report, tmp_path / "imported", llama_dir=str(COMP))
    assert (dst / "musicgen" / "config.json").is_file()
    again = load_imported(dst)
    assert again.cfg.decoder.path == str(dst / "musicgen")
    for name, value in musicgen.state_dict().items():
        assert torch.equal(again.decoder.model.state_dict()[name], value), name
    assert again.decoder.tokenizer is not None


def test_cli_reports_a_missing_tokenizer_in_one_line(release, tmp_path, capsys):
    """The published route makes music from the answer text: without a T5 tokenizer the CLI
    says so in one line (exit 2) instead of a traceback."""
    import inference

    path, config_dir, _, _ = release
    bare = tmp_path / "config_only"
    bare.mkdir()
    (bare / "config.json").write_text((config_dir / "config.json").read_text())
    argv = ["--model", str(path), "--llama_dir", str(COMP), "--mert_path", str(COMP / "mert"),
            "--vit_path", str(COMP / "vit"), "--vivit_path", str(COMP / "vivit"),
            "--music_decoder_path", str(bare), "--device", "cpu", "--prompt", "Play music.",
            "--music", "always", "--max_new_tokens", "4", "--out_dir", str(tmp_path / "o")]
    assert inference.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no T5 tokenizer" in err[0] and str(bare) in err[0]
