"""Tiny random-weight decoders: the real MusicGen / AudioLDM2 classes with small configs.

Tests, benchmarks and the demo's `tiny` presets run the same code paths as real checkpoints
without downloads. Weights come from a fixed seed so every process builds identical decoders
(cached decoder targets stay valid); tokenizers are built in memory from a fixed word list.
"""

from __future__ import annotations

import contextlib
import re
import string
from typing import Any, Iterator

import torch

from util.seed import seeded

TINY_DECODER_SEED = 20240  # tiny weights must be identical in every process (cached targets)
_CLAP_DIM, _T5_DIM, _GPT_DIM = 16, 32, 16  # widths of the tiny AudioLDM2's text encoders

_TINY_WORDS = (
    "a an the of and or with in on at to for from by is are this that it its as but very some "
    "music musical melody melodies song songs tune track piece sound sounds audio clip instrument "
    "instruments piano organ flute guitar violin cello drums drum bass synth strings voice vocals "
    "choir trumpet saxophone harp bell bells low high slow fast soft loud quiet gentle calm happy "
    "sad dark bright warm cold deep light heavy upbeat mellow energetic dreamy ambient classical "
    "jazz rock pop electronic folk dance techno blues orchestral cinematic lofi tempo rhythm beat "
    "beats register pitch key major minor chord chords notes note playing plays played solo "
    "background texture harmony harmonies lead intro quality low-quality noise red green blue "
    "yellow small large brightening darkening colour color image video picture generate compose "
    "play create make edit change add remove replace more less faster slower higher lower "
    "short long steady rising falling repetitive simple complex acoustic electric"
).split()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Tiny configs trip harmless 'token id outside vocabulary' warnings (real MusicGen too)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


@contextlib.contextmanager
def _warnings_suppressed(message_prefix: str) -> Iterator[None]:
    """Silence one known, harmless library warning (by its message prefix) for a block."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(message_prefix) + ".*")
        yield


# ---------------------------------------------------------------------------------------------
# Offline tokenizers


def tiny_t5_tokenizer(max_length: int):
    """A T5 (Unigram) tokenizer built in memory: caption words as pieces, characters as fallback."""
    from transformers import T5Tokenizer

    vocab: list[tuple[str, float]] = [
        ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)
    ]
    seen = {p for p, _ in vocab}
    for word in _TINY_WORDS:
        piece = "\u2581" + word
        if piece not in seen:
            vocab.append((piece, -1.0))
            seen.add(piece)
    for ch in string.ascii_letters + string.digits + string.punctuation:
        if ch not in seen:
            vocab.append((ch, -6.0))
            seen.add(ch)
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def tiny_roberta_tokenizer(max_length: int):
    """A byte-level BPE tokenizer without merges (one token per byte): enough for tiny CLAP."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for ch in sorted(ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


# ---------------------------------------------------------------------------------------------
# MusicGen


def build_tiny_musicgen(max_text_tokens: int, **decoder_overrides: Any):
    """(model, tokenizer): MusicGen with a 2-layer T5, a 4-codebook EnCodec at 32 kHz / 50 frames/s.

    `decoder_overrides` resize the MusicGen decoder (benchmarks use a mid-size one).
    """
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    tokenizer = tiny_t5_tokenizer(max_text_tokens)
    codebook_size = 64
    t5 = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, dropout_rate=0.0,
    )
    # 32 kHz / (8*5*4*4) = 50 frames/s like the real codec; 1.2 kbps at 6 bits/frame = 4 quantizers.
    encodec = EncodecConfig(
        sampling_rate=32000, audio_channels=1, hidden_size=16, num_filters=4,
        upsampling_ratios=[8, 5, 4, 4], codebook_size=codebook_size, codebook_dim=16,
        num_lstm_layers=1, target_bandwidths=[1.2],
    )
    dec_kwargs = dict(
        vocab_size=codebook_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ffn_dim=64, num_codebooks=4, max_position_embeddings=2048, dropout=0.0,
        pad_token_id=codebook_size, bos_token_id=codebook_size,
    )
    dec_kwargs.update(decoder_overrides)
    with _quiet_transformers(), seeded(TINY_DECODER_SEED):
        config = MusicgenConfig(
            text_encoder=t5, audio_encoder=encodec, decoder=MusicgenDecoderConfig(**dec_kwargs)
        )
        model = MusicgenForConditionalGeneration(config)
        # EnCodec initialises its codebooks to zeros (real ones are learned): every code would
        # decode to the same sound. Random codebooks make the tiny audio depend on the codes.
        for name, buffer in model.audio_encoder.named_buffers():
            if name.endswith("codebook.embed"):
                buffer.normal_()
            elif name.endswith("codebook.embed_avg"):
                buffer.copy_(model.audio_encoder.get_buffer(name[: -len("_avg")]))
    gen = model.generation_config
    gen.decoder_start_token_id = codebook_size
    gen.pad_token_id = codebook_size
    gen.bos_token_id = codebook_size
    gen.do_sample = True
    gen.top_k = 250
    return model.eval(), tokenizer


# ---------------------------------------------------------------------------------------------
# AudioLDM2 (16 kHz, 100 mel frames/s, 16 mel bins). The component builders below must run in
# this order under one seed: each draws its random initial weights from the same stream.


def _tiny_unet():
    from diffusers import AudioLDM2UNet2DConditionModel

    return AudioLDM2UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=([None, _GPT_DIM, _T5_DIM], [None, _GPT_DIM, _T5_DIM]),
        norm_num_groups=4, attention_head_dim=4,
    )


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16], in_channels=1, out_channels=1,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4, norm_num_groups=4, layers_per_block=1,
    )


def _tiny_clap(vocab_size: int):
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig

    text_cfg = ClapTextConfig(
        bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=_CLAP_DIM,
        intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
        vocab_size=vocab_size, projection_dim=_CLAP_DIM, max_position_embeddings=70,
    )
    audio_cfg = ClapAudioConfig(
        spec_size=64, window_size=4, num_mel_bins=16, intermediate_size=32, depths=[1, 1],
        num_attention_heads=[2, 2], num_hidden_layers=2, hidden_size=16,
        patch_embeds_hidden_size=8, projection_dim=_CLAP_DIM, patch_size=2, patch_stride=2,
        patch_embed_input_channels=4,
    )
    return ClapModel(
        ClapConfig(
            text_config=text_cfg.to_dict(), audio_config=audio_cfg.to_dict(),
            projection_dim=_CLAP_DIM,
        )
    )


def _tiny_t5_encoder(tokenizer):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer), d_model=_T5_DIM, d_ff=64, d_kv=8, num_heads=4,
            num_layers=2, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id,
        )
    )


def _tiny_gpt2(max_text_tokens: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt_cfg = GPT2Config(
        n_embd=_GPT_DIM, n_head=2, n_layer=2, vocab_size=100, n_positions=max_text_tokens + 32,
        bos_token_id=0, eos_token_id=0,
    )
    gpt_cfg.max_new_tokens = 8
    return GPT2LMHeadModel(gpt_cfg)


def _tiny_vocoder():
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    vocoder = SpeechT5HifiGan(
        SpeechT5HifiGanConfig(
            model_in_dim=16, sampling_rate=16000, upsample_initial_channel=16,
            upsample_rates=[8, 5, 4], upsample_kernel_sizes=[16, 10, 8],
            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
        )
    )
    # HiFi-GAN's own init (std 0.01) makes a random vocoder output ~1e-7, i.e. silence in a
    # 16-bit WAV; fan-in scaled weights give audible (if meaningless) tiny-preset audio.
    for module in vocoder.modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            fan_in = module.weight.shape[1] * module.weight.shape[2]
            torch.nn.init.normal_(module.weight, std=fan_in**-0.5)
    return vocoder


def build_tiny_audioldm2(max_text_tokens: int):
    """AudioLDM2Pipeline from tiny components (16 kHz, 100 mel frames/s, 16 mel bins)."""
    from diffusers import AudioLDM2Pipeline, AudioLDM2ProjectionModel, DDIMScheduler
    from transformers import ClapFeatureExtractor

    tokenizer = tiny_roberta_tokenizer(64)
    tokenizer_2 = tiny_t5_tokenizer(max_text_tokens)
    with _quiet_transformers(), seeded(TINY_DECODER_SEED):
        unet = _tiny_unet()
        vae = _tiny_vae()
        clap = _tiny_clap(len(tokenizer))
        t5 = _tiny_t5_encoder(tokenizer_2)
        language_model = _tiny_gpt2(max_text_tokens)
        projection = AudioLDM2ProjectionModel(
            text_encoder_dim=_CLAP_DIM, text_encoder_1_dim=_T5_DIM, langauge_model_dim=_GPT_DIM
        )
        vocoder = _tiny_vocoder()
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False,
    )
    with _warnings_suppressed("At least one mel filter"):
        feature_extractor = ClapFeatureExtractor(
            feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=2,
            fft_window_size=400,
        )
    return AudioLDM2Pipeline(
        vae=vae, text_encoder=clap, text_encoder_2=t5, projection_model=projection,
        language_model=language_model, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        feature_extractor=feature_extractor, unet=unet, scheduler=scheduler, vocoder=vocoder,
    )
