"""Frozen encoder wrappers (tiny presets): shapes, freezing, windows over long audio, batching,
loading from folders (HuBERT-compatible, remote code, broken remote code), preprocessing."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from llama.bridges import MusicBridge
from llama.config import get_preset
from llama.encoders import (
    EncodedAudio,
    load_image_encoder,
    load_music_encoder,
    load_video_encoder,
    sample_frame_indices,
)

SR = 24000


@pytest.fixture(scope="module")
def cfg():
    return get_preset("tiny")


@pytest.fixture(scope="module")
def mert(cfg):
    return load_music_encoder(cfg.mert)


@pytest.fixture(scope="module")
def vit(cfg):
    return load_image_encoder(cfg.vit)


@pytest.fixture(scope="module")
def vivit(cfg):
    return load_video_encoder(cfg.vivit)


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Shapes and freezing


def test_music_shapes_and_mask(cfg, mert):
    out = mert.encode([_noise(3.0, 0), _noise(1.5, 1)])
    assert isinstance(out, EncodedAudio)
    states, mask = out  # unpacks like a tuple (the composed model relies on it)
    b, s, t, h = states.shape
    assert (b, s, h) == (2, cfg.mert.num_hidden_states, cfg.mert.hidden_size)
    assert s == mert.model.config.num_hidden_layers + 1
    assert states.dtype == torch.float32 and mask.dtype == torch.bool
    n0, n1 = mask.sum(1).tolist()
    # the tiny MERT hops 320 samples (75 frames/s at 24 kHz, like MERT), minus the conv border
    assert t == n0 and n0 == 224 and n1 == 112
    assert torch.all(states[1, :, n1:] == 0)


def test_image_and_video_shapes(cfg, vit, vivit):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8),
            rng.integers(0, 256, (3, 2), dtype=np.uint8),  # grey, degenerate size
            rng.integers(0, 256, (64, 64, 1), dtype=np.uint8)]
    assert vit.encode(imgs).shape == (3, cfg.vit.num_tokens, cfg.vit.hidden_size)
    vids = [rng.integers(0, 256, (cfg.vivit.num_frames, 20, 30, 3), dtype=np.uint8),
            rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)]  # fewer frames than needed
    assert vivit.encode(vids).shape == (2, cfg.vivit.num_tokens, cfg.vivit.hidden_size)


def test_bad_inputs_raise_clear_errors(mert, vit, vivit):
    with pytest.raises(ValueError, match="receptive field"):
        mert.encode([np.zeros(300, np.float32)])
    with pytest.raises(ValueError, match="1-D"):
        mert.encode([np.zeros((2, 24000), np.float32)])
    with pytest.raises(ValueError, match="uint8"):
        vit.encode([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        vivit.encode([np.zeros((8, 8, 3), np.uint8)])


@pytest.mark.parametrize("name", ["mert", "vit", "vivit"])
def test_frozen_eval_no_grad(name, request):
    enc = request.getfixturevalue(name)
    enc.train()  # an enclosing model switching to train mode must not wake the encoder
    assert not enc.training and not enc.model.training
    assert all(not p.requires_grad for p in enc.model.parameters())
    batch = {"mert": [_noise(1.0, 0)],
             "vit": [np.zeros((8, 8, 3), np.uint8)],
             "vivit": [np.zeros((2, 8, 8, 3), np.uint8)]}[name]
    out = enc.encode(batch)
    out = out.hidden_states if name == "mert" else out
    assert not out.requires_grad and out.grad_fn is None


def test_silence_is_valid(mert):
    states, _ = mert.encode([np.zeros(SR, np.float32)])
    assert torch.isfinite(states).all()


# ---------------------------------------------------------------------------------------------
# Determinism and identity


def test_tiny_weights_depend_only_on_seed(cfg, mert):
    torch.manual_seed(999)  # the caller's RNG state must not matter
    again = load_music_encoder(cfg.mert)
    assert again.identity == mert.identity
    for a, b in zip(again.model.parameters(), mert.model.parameters()):
        assert torch.equal(a, b)
    other = load_music_encoder(dataclasses.replace(cfg.mert, tiny_seed=1))
    assert other.identity != mert.identity
    assert not torch.equal(next(other.model.parameters()), next(mert.model.parameters()))


def test_identity_tracks_preprocessing_and_dtype(cfg, mert):
    longer = load_music_encoder(dataclasses.replace(cfg.mert, window_seconds=20.0))
    assert longer.identity != mert.identity
    half = load_music_encoder(cfg.mert, dtype=torch.bfloat16)
    assert half.identity != mert.identity
    assert half.encode([_noise(1.0, 0)]).hidden_states.dtype == torch.float32
    cast = load_music_encoder(cfg.mert).to(torch.bfloat16)  # e.g. cast with an enclosing model
    assert cast.identity == half.identity != mert.identity


# ---------------------------------------------------------------------------------------------
# Long audio: the whole clip counts


def test_windows_cover_the_clip(mert):
    w = mert.window
    assert mert.windows(w) == [(0, w)]
    assert mert.windows(2 * w + 5 * SR) == [(0, w), (w, 2 * w), (2 * w, 2 * w + 5 * SR)]
    # a tail shorter than min_tail is merged into the previous window, not encoded alone
    assert mert.windows(2 * w + 100) == [(0, w), (w, 2 * w + 100)]


def test_last_minute_of_three_changes_pooled_feature(cfg):
    """The wrapper is what is tested here, so a lighter tiny MERT keeps 2 x 3 min fast."""
    c = cfg.mert
    light = dataclasses.replace(c, hidden_size=16, num_hidden_states=2, tiny_config={
        **c.tiny_config, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "conv_dim": (8,) * 7})
    mert = load_music_encoder(light)
    clip = _noise(180.0, 3)
    edited = clip.copy()
    edited[120 * SR:] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(60 * SR) / SR)  # a tone
    out = mert.encode([clip, edited])
    states, mask = out
    assert int(mask[0].sum()) == 18 * 749  # 18 windows of 10 s, every one encoded
    # the first two minutes are identical, the last one differs
    f = 749 * 12
    assert torch.allclose(states[0, :, :f], states[1, :, :f], atol=1e-5)
    assert not torch.allclose(states[0, :, f:], states[1, :, f:], atol=1e-3)
    torch.manual_seed(0)
    for pooling in ("rnn-attention", "mean"):
        bridge = MusicBridge(light.hidden_size, light.num_hidden_states, 32, pooling=pooling)
        with torch.no_grad():
            pooled = bridge(states, mask)
        rel = (pooled[0] - pooled[1]).norm() / pooled[0].norm()
        assert rel > 1e-3, (pooling, float(rel))  # numerical noise is ~1e-7


# ---------------------------------------------------------------------------------------------
# Batching equals one-by-one


def test_batched_music_equals_individual(mert):
    clips = [_noise(1.0, 5), _noise(11.5, 6), _noise(0.7, 7)]  # 11.5 s: two windows
    batched = mert.encode_items(clips)
    for clip, b in zip(clips, batched):
        (alone,) = mert.encode_items([clip])
        assert alone.shape == b.shape
        assert torch.allclose(alone, b, atol=1e-5), (alone - b).abs().max()


def test_group_norm_extractor_batches_only_equal_lengths(cfg):
    """HuBERT-base-style group norm mixes time statistics: padding would change features, so
    windows of different lengths must not share a micro-batch."""
    gcfg = dataclasses.replace(cfg.mert, tiny_config={**cfg.mert.tiny_config,
                                                      "feat_extract_norm": "group",
                                                      "do_stable_layer_norm": False})
    enc = load_music_encoder(gcfg)
    assert not enc.pad_with_mask
    clips = [_noise(1.0, 8), _noise(2.0, 9), _noise(1.0, 10)]
    batched = enc.encode_items(clips)
    for clip, b in zip(clips, batched):
        assert torch.allclose(enc.encode_items([clip])[0], b, atol=1e-5)


def test_batched_image_and_video_equal_individual(vit, vivit):
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (20 + 7 * i, 30, 3), dtype=np.uint8) for i in range(3)]
    batched = vit.encode(imgs)
    for i, img in enumerate(imgs):
        assert torch.allclose(vit.encode([img])[0], batched[i], atol=1e-5)
    vids = [rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8) for _ in range(2)]
    vb = vivit.encode(vids)
    assert torch.allclose(vivit.encode([vids[1]])[0], vb[1], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Preprocessing semantics


def test_image_preprocessing_resize_rescale_normalise(cfg, vit):
    px = vit.processor([np.full((10, 30, 3), 51, np.uint8)], return_tensors="pt",
                       input_data_format="channels_last")["pixel_values"]
    assert px.shape == (1, 3, cfg.vit.image_size, cfg.vit.image_size)
    assert torch.allclose(px, torch.full_like(px, (51 / 255 - 0.5) / 0.5), atol=1e-5)


def test_video_frame_resampling():
    assert sample_frame_indices(64, 4).tolist() == [0, 21, 42, 63]
    assert sample_frame_indices(2, 4).tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4)


def test_music_normalisation_per_window(mert):
    """Zero-mean unit-variance per window: gain and DC offset do not change the features."""
    x = _noise(2.0, 11)
    a = mert.encode_items([x])[0]
    b = mert.encode_items([3.0 * x + 0.2])[0]
    assert torch.allclose(a, b, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Loading real folders


def _save_tiny_hubert(cfg, folder, seed=0):
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    conf = HubertConfig(feat_extract_norm="layer", do_stable_layer_norm=True,
                        **cfg.mert.tiny_config)
    HubertModel(conf).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)


MODELING = """
from transformers import HubertModel
from .configuration_fakemert import FakeMertConfig


class FakeMertModel(HubertModel):
    config_class = FakeMertConfig
"""
CONFIGURATION = """
from transformers import HubertConfig


class FakeMertConfig(HubertConfig):
    model_type = "fakemert"
"""


def _add_remote_code(folder, broken: bool = False):
    (folder / "configuration_fakemert.py").write_text(CONFIGURATION)
    modeling = ("import nonexistent_mert_dependency\n" if broken else "") + MODELING
    (folder / "modeling_fakemert.py").write_text(modeling)
    conf = json.loads((folder / "config.json").read_text())
    conf.update(model_type="fakemert", auto_map={
        "AutoConfig": "configuration_fakemert.FakeMertConfig",
        "AutoModel": "modeling_fakemert.FakeMertModel"})
    (folder / "config.json").write_text(json.dumps(conf))


@pytest.fixture(scope="module")
def modules_cache(tmp_path_factory):
    """Remote code is copied into HF_MODULES_CACHE: keep it out of the home folder."""
    import transformers.dynamic_module_utils as dmu

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path_factory.mktemp("hf_modules")))
        yield


def test_hubert_folder_loads_with_its_processor(cfg, tmp_path):
    _save_tiny_hubert(cfg, tmp_path)
    enc = load_music_encoder(dataclasses.replace(cfg.mert, path=str(tmp_path)))
    assert type(enc.model).__name__ == "HubertModel"
    copy = tmp_path.parent / (tmp_path.name + "-copy")  # the same weights spelled differently
    shutil.copytree(tmp_path, copy)
    assert load_music_encoder(dataclasses.replace(cfg.mert, path=str(copy))).identity == \
        enc.identity and str(tmp_path) not in enc.identity
    assert enc.encode([_noise(1.0, 0)]).hidden_states.shape[1] == cfg.mert.num_hidden_states


def test_remote_code_runs_only_on_request(cfg, tmp_path, modules_cache):
    _save_tiny_hubert(cfg, tmp_path)
    _add_remote_code(tmp_path)
    plain = load_music_encoder(dataclasses.replace(cfg.mert, path=str(tmp_path)))
    assert type(plain.model).__name__ == "HubertModel"
    enc = load_music_encoder(
        dataclasses.replace(cfg.mert, path=str(tmp_path), trust_remote_code=True))
    assert type(enc.model).__name__ == "FakeMertModel"
    assert enc.encode([_noise(1.0, 0)]).hidden_states.shape[1] == cfg.mert.num_hidden_states


def test_broken_remote_code_on_request_is_a_clear_error(cfg, tmp_path, modules_cache):
    _save_tiny_hubert(cfg, tmp_path)
    _add_remote_code(tmp_path, broken=True)
    with pytest.raises(ValueError, match="remote code failed"):
        load_music_encoder(
            dataclasses.replace(cfg.mert, path=str(tmp_path), trust_remote_code=True))


def test_folder_with_missing_weights_is_refused(cfg, tmp_path):
    from safetensors.torch import load_file, save_file

    _save_tiny_hubert(cfg, tmp_path)
    f = tmp_path / "model.safetensors"
    sd = load_file(f)
    save_file({k: v for k, v in sd.items() if "encoder.layers.0." not in k}, f,
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing"):
        load_music_encoder(dataclasses.replace(cfg.mert, path=str(tmp_path)))


def test_missing_local_folder_is_a_clear_error(cfg):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_music_encoder(dataclasses.replace(cfg.mert, path="/nonexistent/mert"))


def test_vit_and_vivit_folders_match_tiny(cfg, vit, vivit, tmp_path):
    from transformers import ViTImageProcessorPil

    vit.model.save_pretrained(tmp_path / "vit")
    ViTImageProcessorPil(size={"height": 64, "width": 64}, image_mean=[0.5] * 3,
                         image_std=[0.5] * 3).save_pretrained(tmp_path / "vit")
    vivit.model.save_pretrained(tmp_path / "vivit")  # no processor file: the default is used
    v2 = load_image_encoder(dataclasses.replace(cfg.vit, path=str(tmp_path / "vit")))
    vv2 = load_video_encoder(dataclasses.replace(cfg.vivit, path=str(tmp_path / "vivit")))
    img = [np.random.default_rng(2).integers(0, 256, (20, 20, 3), dtype=np.uint8)]
    vid = [np.random.default_rng(3).integers(0, 256, (8, 20, 20, 3), dtype=np.uint8)]
    assert torch.allclose(v2.encode(img), vit.encode(img), atol=1e-6)
    assert torch.allclose(vv2.encode(vid), vivit.encode(vid), atol=1e-6)


def _mert_folder_with_remote_code(tmp_path, cfg):
    """A MERT-style folder: HuBERT weights plus an `auto_map` naming code that leaves a mark."""
    from transformers import HubertConfig, HubertModel

    folder = tmp_path / "mert"
    base = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}
    HubertModel(HubertConfig(**{**base, **cfg.mert.tiny_config})).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_mert.MERTConfig",
                          "AutoModel": "modeling_mert.MERTModel"}
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "remote_code_ran"
    for name in ("configuration_mert.py", "modeling_mert.py"):
        (folder / name).write_text(f"open({str(marker)!r}, 'w').close()\n")
    return folder, marker


def test_mert_folders_load_without_running_their_code(tmp_path, cfg):
    from llama.encoders import load_music_encoder

    folder, marker = _mert_folder_with_remote_code(tmp_path, cfg)
    enc = load_music_encoder(dataclasses.replace(cfg.mert, path=str(folder)))
    assert not marker.exists()
    feats = enc.encode([_noise(0.5, 0)])
    assert feats.hidden_states.shape[1] == cfg.mert.num_hidden_states


def test_trust_remote_code_is_an_explicit_override():
    from llama.m2ugen import apply_path_overrides

    base = get_preset("tiny")
    assert base.mert.trust_remote_code is False
    assert apply_path_overrides(base, {"trust_remote_code": "true"}).mert.trust_remote_code
