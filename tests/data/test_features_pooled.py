"""Serving pools music window by window (`MediaFeatures(pool_music=True)`, used by app.loading):
one vector per clip, giving the model the same music vector as the whole MERT stack."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from data.features import MediaFeatures
from llama.m2ugen import M2UGen, MediaInput
from llama.music_stream import PooledAudio


def test_pooled_music_features_give_the_whole_stacks_vector(tmp_path):
    model = M2UGen.from_pretrained(None, preset="tiny", load_decoder=False).eval()
    clip = tmp_path / "long.wav"
    sf.write(clip, (0.1 * np.random.default_rng(0).standard_normal(23 * 24000)).astype(
        np.float32), 24000)  # three 10 s windows of the tiny MERT
    pooled = MediaFeatures(model, pool_music=True).item_features("audio", str(clip))
    stack = MediaFeatures(model).item_features("audio", str(clip))
    assert pooled.shape == (model.cfg.mert.hidden_size,)
    assert stack.shape[0] == model.cfg.mert.num_hidden_states and stack.shape[1] > 1000
    assert isinstance(model.encode_media("audio", [pooled]), PooledAudio)
    a = model.media_vector(MediaInput(audio=pooled))
    b = model.media_vector(MediaInput(audio=stack))
    assert float((a - b).abs().max() / b.abs().max()) < 1e-5
    # with a disk cache the entry must hold the whole stack (training reads it): no pooling
    cached = MediaFeatures(model, tmp_path / "cache", pool_music=True).item_features(
        "audio", str(clip))
    assert torch.equal(cached, stack)
