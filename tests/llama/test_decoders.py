"""Music decoders: targets, the projector-route wiring proof, duration, WAV output, bad settings."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from llama.config import DecoderConfig, get_preset
from llama.decoders import (
    AudioLDM2Decoder,
    DecoderLoadError,
    MusicGenDecoder,
    build_tiny_audioldm2,
    build_tiny_musicgen,
    clean_decoder_text,
    infer_padding_mask,
    load_decoder,
)

CAPTION = "a slow piano melody"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def musicgen() -> MusicGenDecoder:
    return load_decoder(get_preset("tiny").decoder)


@pytest.fixture(scope="module")
def audioldm2() -> AudioLDM2Decoder:
    return load_decoder(get_preset("tiny-audioldm2").decoder)


@pytest.fixture(scope="module", params=["musicgen", "audioldm2"])
def decoder(request, musicgen, audioldm2):
    return {"musicgen": musicgen, "audioldm2": audioldm2}[request.param]


class DictCache:
    """The duck type of the feature store: get/put by text key."""

    def __init__(self) -> None:
        self.data: dict[str, torch.Tensor] = {}
        self.gets = 0

    def get(self, key):
        self.gets += 1
        return self.data.get(key)

    def put(self, key, tensor):
        self.data[key] = tensor


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ---------------------------------------------------------------------------------------------
# Text and targets


def test_aud_markers_are_stripped():
    assert clean_decoder_text("[AUD0]a  slow [AUD7]piano[AUD12] ") == "a slow piano"


def test_musicgen_targets_are_masked_t5_states(musicgen):
    t = musicgen.targets([CAPTION, "fast guitar [AUD0][AUD1] song"])
    n_tokens = len(musicgen.tokenizer(CAPTION)["input_ids"])
    assert t.shape == (2, 16, 32) and t.dtype == torch.float32
    assert (t[0].abs().sum(-1) > 0).sum() == n_tokens  # zeros exactly at padding
    assert torch.equal(t[0, n_tokens:], torch.zeros_like(t[0, n_tokens:]))
    torch.testing.assert_close(musicgen.targets([CAPTION], scale=1.0) * 10, t[:1])
    # [AUDk] never reaches the decoder; batch composition does not change a caption's target.
    torch.testing.assert_close(t[1:], musicgen.targets(["fast guitar song"]))


def test_audioldm2_targets_flatten_and_split(audioldm2):
    t = audioldm2.targets([CAPTION, "fast guitar song"], scale=1.0)
    assert t.shape == (2, 1, 16 * 32 + 8 * 16)
    embeds, generated = audioldm2.split_conditioning(t)
    ref_embeds, _, ref_generated = audioldm2.pipe.encode_prompt(
        prompt=[CAPTION], device="cpu", num_waveforms_per_prompt=1,
        do_classifier_free_guidance=False,
    )
    n = ref_embeds.shape[1]
    torch.testing.assert_close(embeds[0, :n], ref_embeds[0])
    assert torch.equal(embeds[0, n:], torch.zeros_like(embeds[0, n:]))
    torch.testing.assert_close(generated[0], ref_generated[0])
    assert torch.equal(audioldm2.join_conditioning(embeds, generated), t)


def test_targets_are_cached_by_caption(decoder, monkeypatch):
    cache = DictCache()
    first = decoder.targets([CAPTION, "fast guitar song"], cache=cache)
    assert len(cache.data) == 2 and all(decoder.identity in k for k in cache.data)

    def fail(_texts):
        raise AssertionError("cached captions must not reach the decoder")

    monkeypatch.setattr(decoder, "_conditioning", fail)
    again = decoder.targets(["fast guitar song", CAPTION], cache=cache)
    assert torch.equal(again, first.flip(0))
    key = next(iter(cache.data))
    cache.data[key] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="stale cache"):
        decoder.targets([CAPTION, "fast guitar song"], cache=cache)


def test_padding_mask_inference():
    states = torch.zeros(2, 5, 4)
    states[0, :3] = torch.randn(3, 4)
    states[0, 3:] = 1e-4  # near-zero projector output at padding
    mask = infer_padding_mask(states, 0.05)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]


# ---------------------------------------------------------------------------------------------
# Wiring proof: the exact targets of a caption reproduce the decoder's own text synthesis


@pytest.mark.parametrize("guidance", [3.5, 1.0])
def test_musicgen_targets_reproduce_text_synthesis(musicgen, guidance):
    target = musicgen.targets([CAPTION])
    via_projector, sr = musicgen.synthesize(target, seconds=0.5, seed=11, guidance_scale=guidance)
    via_text, sr_text = musicgen.synthesize_from_text([CAPTION], seconds=0.5, seed=11,
                                                      guidance_scale=guidance)
    assert sr == sr_text == 32000
    np.testing.assert_array_equal(via_projector[0], via_text[0])
    other, _ = musicgen.synthesize(target, seconds=0.5, seed=12, guidance_scale=guidance)
    assert not np.array_equal(other[0], via_projector[0])  # the seed matters: the check can fail


def test_musicgen_inferred_mask_ignores_small_padding_noise(musicgen):
    target = musicgen.targets([CAPTION])
    noisy = target.clone()
    pad = noisy.abs().sum(-1) == 0
    noisy[pad] = 1e-3 * torch.randn(int(pad.sum()), noisy.shape[-1])
    a, _ = musicgen.synthesize(target, seconds=0.5, seed=3)
    b, _ = musicgen.synthesize(noisy, seconds=0.5, seed=3)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("guidance", [3.5, 1.0])
def test_audioldm2_targets_reproduce_text_synthesis(audioldm2, guidance):
    # The pipeline pads/truncates the negative prompt to the prompt's token count; our route
    # encodes the negative prompt alone. With equal token counts both are the same conditioning.
    negative = "low quality sound music"
    tok = audioldm2.pipe.tokenizer_2
    assert len(tok(negative)["input_ids"]) == len(tok(CAPTION)["input_ids"])
    target = audioldm2.targets([CAPTION])
    settings = dict(seconds=0.5, seed=5, guidance_scale=guidance, num_inference_steps=4)
    via_projector, sr = audioldm2.synthesize(target, negative_prompt=negative, **settings)
    via_text, _ = audioldm2.synthesize_from_text([CAPTION], negative_prompt=negative, **settings)
    pipeline = audioldm2.pipe(
        prompt=CAPTION, negative_prompt=negative, guidance_scale=guidance, num_inference_steps=4,
        audio_length_in_s=0.5, generator=torch.Generator().manual_seed(5),
    ).audios[0]
    assert sr == 16000
    np.testing.assert_array_equal(via_text[0], pipeline)  # text route == the pipeline's own
    # Padding to max_text_tokens changes only summation order in masked cross-attention.
    assert _rel_diff(via_projector[0], via_text[0]) < 1e-4
    other, _ = audioldm2.synthesize(target, negative_prompt=negative, **{**settings, "seed": 6})
    assert _rel_diff(other[0], via_text[0]) > 1e-2


# ---------------------------------------------------------------------------------------------
# Duration, schedulers, ranking, WAV files


@pytest.mark.parametrize("seconds", [0.5, 1.013])
def test_duration_within_one_frame(decoder, seconds):
    target = decoder.targets([CAPTION])
    waves, sr = decoder.synthesize(target, seconds=seconds, seed=0)
    frame = sr // 50 if decoder.kind == "musicgen" else sr // 100  # codec frame / mel frame
    assert waves[0].dtype == np.float32 and waves[0].ndim == 1
    assert abs(len(waves[0]) - seconds * sr) <= frame


def test_audioldm2_schedulers_and_default_steps(audioldm2):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    target = audioldm2.targets([CAPTION])
    audioldm2.synthesize(target, seconds=0.5, scheduler="dpm-multistep", num_inference_steps=3)
    assert isinstance(audioldm2.pipe.scheduler, DPMSolverMultistepScheduler)
    assert len(audioldm2.pipe.scheduler.timesteps) == 3
    assert audioldm2._settings(1.0, None, None, "dpm-multistep", None)[2] == 25
    assert audioldm2._settings(1.0, None, None, None, None)[2:4] == (4, "ddim")  # tiny preset
    audioldm2.synthesize(target, seconds=0.5)
    assert type(audioldm2.pipe.scheduler) is DDIMScheduler


def test_audioldm2_best_of_n_ranking(audioldm2, caplog):
    targets = audioldm2.targets([CAPTION, "fast guitar song"])
    settings = dict(seconds=0.5, seed=3, num_inference_steps=2)
    embeds, generated = audioldm2.split_conditioning(targets[:1] / 10)
    all_three = audioldm2.pipe(
        prompt_embeds=embeds, generated_prompt_embeds=generated,
        attention_mask=infer_padding_mask(embeds, 0.05), guidance_scale=1.0, num_inference_steps=2,
        audio_length_in_s=0.5, num_waveforms_per_prompt=3,
        generator=torch.Generator().manual_seed(3),
    ).audios
    ranked, _ = audioldm2.synthesize(targets[:1], num_waveforms_per_prompt=3,
                                     rank_texts=[CAPTION], guidance_scale=1.0, **settings)
    assert len(ranked) == 1
    assert any(_rel_diff(ranked[0], w) < 1e-4 for w in all_three)
    # For one prompt the pipeline's own CLAP ranking is correct: it must agree with ours.
    best = audioldm2.pipe.score_waveforms(
        text=[CAPTION], audio=torch.from_numpy(all_three), num_waveforms_per_prompt=3,
        device="cpu", dtype=torch.float32,
    )[0].numpy()
    assert _rel_diff(ranked[0], best) < 1e-4
    assert _rel_diff(ranked[0], all_three[0]) > 1e-2  # with this seed the best is not the first
    # Ranking stays within each prompt's own candidates.
    audio = torch.stack([torch.full((8000,), float(i)) for i in range(6)]) * 1e-3
    picked = audioldm2._rank(audio, [CAPTION, "fast guitar song"], 3)
    assert picked.shape == (2, 8000)
    assert 0 <= picked[0, 0] * 1e3 < 3 and 3 <= picked[1, 0] * 1e3 < 6
    with caplog.at_level(logging.WARNING, logger="llama.decoders"):
        audioldm2._warned_no_rank_text = False
        plain, _ = audioldm2.synthesize(targets, num_waveforms_per_prompt=3, **settings)
    assert len(plain) == 2 and "ranking 3 waveforms needs text" in caplog.text


def test_synthesized_audio_writes_to_wav(decoder, tmp_path: Path):
    waves, sr = decoder.synthesize(decoder.targets([CAPTION]), seconds=0.6, seed=1)
    from data.media import write_wav  # the project's one WAV writer

    assert not hasattr(decoder, "write_wav")  # the model package does no file I/O
    info = sf.info(write_wav(tmp_path / "x.wav", waves[0], sr))
    assert (info.samplerate, info.channels, info.frames) == (sr, 1, round(0.6 * sr))
    assert np.abs(sf.read(tmp_path / "x.wav")[0]).max() > 0  # not silence


# ---------------------------------------------------------------------------------------------
# Bad settings and loading


@pytest.mark.parametrize("seconds", [-1.0, 0.0, math.nan, 31.0])
def test_bad_duration(decoder, seconds):
    with pytest.raises(ValueError, match="seconds"):
        decoder.synthesize(decoder.targets([CAPTION]), seconds=seconds)
    with pytest.raises(ValueError, match="seconds"):
        decoder.synthesize_from_text([CAPTION], seconds=seconds)


def test_bad_settings(musicgen, audioldm2):
    for dec in (musicgen, audioldm2):
        target = dec.targets([CAPTION])
        with pytest.raises(ValueError, match="guidance_scale"):
            dec.synthesize(target, seconds=0.5, guidance_scale=0.5)
        with pytest.raises(ValueError, match="conditioning must have shape"):
            dec.synthesize(target[..., :-1], seconds=0.5)
    target = audioldm2.targets([CAPTION])
    with pytest.raises(ValueError, match="num_inference_steps"):
        audioldm2.synthesize(target, seconds=0.5, num_inference_steps=0)
    with pytest.raises(ValueError, match="scheduler"):
        audioldm2.synthesize(target, seconds=0.5, scheduler="euler")
    with pytest.raises(ValueError, match="num_waveforms_per_prompt"):
        audioldm2.synthesize(target, seconds=0.5, num_waveforms_per_prompt=0)
    with pytest.raises(ValueError, match="seconds must be >="):
        audioldm2.synthesize(target, seconds=0.001)
    target = musicgen.targets([CAPTION])
    with pytest.raises(ValueError, match="num_inference_steps applies to AudioLDM2"):
        musicgen.synthesize(target, seconds=0.5, num_inference_steps=10)
    with pytest.raises(ValueError, match="top_p"):
        musicgen.synthesize(target, seconds=0.5, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        musicgen.synthesize(target, seconds=0.5, temperature=-1.0)
    with pytest.raises(ValueError, match="seed"):
        musicgen.synthesize(target, seconds=0.5, seed=-3)


def test_bad_decoder_configs():
    with pytest.raises(ValueError, match="kind"):
        load_decoder(DecoderConfig(kind="wavenet", path="tiny"))
    with pytest.raises(ValueError, match="tiny-audioldm2"):
        load_decoder(DecoderConfig(kind="musicgen", path="tiny-audioldm2"))
    with pytest.raises(DecoderLoadError, match="no/such/folder"):
        load_decoder(DecoderConfig(kind="musicgen", path="/no/such/folder"))


def test_local_folders_load_like_checkpoints(tmp_path: Path, musicgen, audioldm2):
    """Real-checkpoint code path: save tiny decoders in the published layouts, load by folder."""
    from transformers import GPT2Model

    model, tokenizer = build_tiny_musicgen(16)
    model.save_pretrained(tmp_path / "musicgen")
    tokenizer.save_pretrained(tmp_path / "musicgen")
    loaded = load_decoder(DecoderConfig(kind="musicgen", path=str(tmp_path / "musicgen"),
                                        max_text_tokens=16))
    assert torch.equal(loaded.targets([CAPTION]), musicgen.targets([CAPTION]))
    # cache identity follows the weights, not how their location is spelled
    assert loaded.identity == musicgen.identity
    with torch.no_grad():
        next(loaded.model.parameters()).add_(1e-3)  # a "fine-tuned copy"
    loaded._identity = None
    assert loaded.identity != musicgen.identity

    pipe = build_tiny_audioldm2(16)
    published_lm = GPT2Model(pipe.language_model.config)  # the published folders name GPT2Model
    published_lm.load_state_dict(pipe.language_model.transformer.state_dict())
    pipe.language_model = published_lm
    pipe.save_pretrained(tmp_path / "audioldm2")
    cfg = dataclasses.replace(get_preset("tiny-audioldm2").decoder,
                              path=str(tmp_path / "audioldm2"))
    loaded = load_decoder(cfg)
    torch.testing.assert_close(loaded.targets([CAPTION]), audioldm2.targets([CAPTION]))
    assert loaded.condition_shape == audioldm2.condition_shape


def test_targets_work_with_the_project_text_store(musicgen, tmp_path: Path):
    """`data.features.TextFeatureStore` (lookup/put, may store rounded values) as the cache."""
    from data.features import TextFeatureStore

    store = TextFeatureStore(tmp_path, identity=musicgen.identity, dtype="float16")
    fresh = musicgen.targets([CAPTION], cache=store)
    assert store.stats.computed == 0 and len(list(tmp_path.rglob("*.safetensors"))) == 1
    again = musicgen.targets([CAPTION], cache=store)
    assert torch.equal(fresh, again)  # the stored (float16-rounded) value both times
    torch.testing.assert_close(fresh, musicgen.targets([CAPTION]), atol=0.05, rtol=0.01)
