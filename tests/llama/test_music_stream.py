"""MERT states in the published order, streamed window by window into bounded per-clip outputs.

The reference stacks in published_reference/mert_stack/ were computed by transformers 4.35.2 (the
published M2UGen pin, whose HuBERT classes MERT's own code builds on) exactly as the published
`encode_audio` stacks them (see published_reference/README.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llama.bridges import MusicBridge
from llama.config import get_preset
from llama.encoders import EncodedAudio, load_music_encoder
from llama.music_stream import FrameMix, FramePool, MixedAudio, PooledAudio, StateMean

REF = Path(__file__).parent / "published_reference"
STACK = REF / "mert_stack"
SR = 24000


@pytest.fixture(scope="module")
def reference():
    return load_file(str(STACK / "reference.safetensors"))


def _clips(reference) -> dict[str, np.ndarray]:
    return {"clip0": np.load(REF / "media.npz")["audio"].astype(np.float32),
            "clip1": reference["clip1.audio"].numpy()}


def _encoder(variant: str):
    cfg = get_preset("tiny").mert
    cfg = dataclasses.replace(cfg, path=str(STACK / variant), hidden_size=24, num_hidden_states=3)
    return load_music_encoder(cfg)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("variant", ["stable", "group"])
def test_states_equal_the_published_stack(reference, variant):
    """Every state, the last included, as the published code computed it; alone and batched."""
    enc = _encoder(variant)
    assert enc.model.config.do_stable_layer_norm == (variant == "stable")
    clips = _clips(reference)
    together = enc.encode_items(list(clips.values()))
    for (name, clip), batched in zip(clips.items(), together):
        want = reference[f"{variant}.{name}.states"]
        (alone,) = enc.encode_items([clip])
        assert alone.shape == want.shape
        assert _rel(alone, want) < 1e-5, (name, _rel(alone, want))
        assert _rel(batched, want) < 1e-5


def test_last_state_is_after_the_final_layer_norm(reference):
    """transformers 5 returns the last layer's output before a stable-norm MERT's final layer
    norm; the published stack (and ours) holds it after: the layer norm of theirs."""
    enc = _encoder("stable")
    clip = _clips(reference)["clip1"]
    ours = enc.encode_items([clip])[0]
    values = enc.processor(clip, sampling_rate=SR, return_tensors="pt")["input_values"]
    with torch.no_grad():
        out = enc.model(values, output_hidden_states=True)
    hf = torch.stack(out.hidden_states)[:, 0]
    assert torch.allclose(ours[:-1], hf[:-1], atol=1e-6)  # states 0..L-1: the same
    assert _rel(ours[-1], hf[-1]) > 0.1  # the last one is not transformers 5's
    with torch.no_grad():
        normed = enc.model.encoder.layer_norm(hf[-1])
    assert torch.allclose(ours[-1], normed, atol=1e-6)
    assert torch.allclose(ours[-1], out.last_hidden_state[0], atol=1e-6)


@pytest.fixture(scope="module")
def tiny_mert():
    return load_music_encoder(get_preset("tiny").mert)


@pytest.mark.parametrize("pooling, l2", [("rnn-attention", "pooled"), ("rnn-attention", "frames"),
                                         ("mean", "pooled")])
def test_reduced_windows_give_the_bridge_output_of_the_whole_stack(tiny_mert, pooling, l2):
    cfg = get_preset("tiny").mert
    torch.manual_seed(0)
    bridge = MusicBridge(cfg.hidden_size, cfg.num_hidden_states, 32, pooling=pooling, l2=l2)
    with torch.no_grad():  # zero_biases() leaves the mix bias 0: give it one
        bridge.agg.bias.fill_(0.3)
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(int(s * SR)) * 0.1).astype(np.float32) for s in (23.0, 1.5)]
    full = tiny_mert.collate(tiny_mert.encode_items(clips))  # 23 s: three 10 s windows
    with torch.no_grad():
        reduction = bridge.reduction()
        reduced = tiny_mert.collate(tiny_mert.encode_items(clips, reduction=reduction))
        want = bridge(*full)
        got = bridge(*reduced, pooled=isinstance(reduced, PooledAudio))
    if pooling == "mean":
        assert isinstance(reduction, StateMean) and isinstance(reduced, EncodedAudio)
        assert reduced.hidden_states.shape[2] == 1  # one mean per state
    else:  # the RNN ran window after window, the softmax was folded in: one vector per clip
        assert isinstance(reduction, FramePool) and isinstance(reduced, PooledAudio)
        assert reduced.vectors.shape == (2, cfg.hidden_size)
    assert _rel(got, want) < 1e-5


def test_state_mix_alone_gives_the_bridge_output(tiny_mert):
    cfg = get_preset("tiny").mert
    torch.manual_seed(1)
    bridge = MusicBridge(cfg.hidden_size, cfg.num_hidden_states, 32)
    clips = [(np.random.default_rng(5).standard_normal(int(s * SR)) * 0.1).astype(np.float32)
             for s in (12.0, 2.5)]
    full = tiny_mert.collate(tiny_mert.encode_items(clips))
    with torch.no_grad():
        mix = bridge.reduction().mix
        reduced = tiny_mert.collate(tiny_mert.encode_items(clips, reduction=mix))
        got, want = bridge(*reduced, mixed=True), bridge(*full)
    assert isinstance(mix, FrameMix) and isinstance(reduced, MixedAudio)
    assert reduced.frames.shape == (2, full.hidden_states.shape[2], cfg.hidden_size)
    assert torch.equal(reduced.mask, full.mask)
    assert _rel(got, want) < 1e-5


def test_no_reduction_while_the_bridge_trains():
    bridge = MusicBridge(8, 3, 16)
    assert bridge.reduction() is None  # grad on, bridge trainable: it needs every state
    with torch.no_grad():
        assert isinstance(bridge.reduction(), FramePool)
    bridge.requires_grad_(False)
    assert isinstance(bridge.reduction(), FramePool)


def test_long_clips_are_encoded_one_window_per_forward(tiny_mert):
    """Memory per forward is bounded by one window: a long clip's windows never share one."""
    w = tiny_mert.window
    lengths = [w] * 4 + [w // 2, w // 2, w // 3, w // 3, w // 3]
    groups = tiny_mert._micro_batches(list(range(len(lengths))), lengths,
                                      list(range(len(lengths))))  # every window its own clip
    assert groups[:4] == [[0], [1], [2], [3]]
    for g in groups:
        assert len(g) * max(lengths[j] for j in g) <= w and len(g) <= tiny_mert.max_batch
    assert [4, 5] in groups and [6, 7, 8] in groups
    calls = []
    handle = tiny_mert.model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape))
    try:
        tiny_mert.encode_items([np.zeros(int(3.5 * w), np.float32)])
    finally:
        handle.remove()
    assert [tuple(c) for c in calls] == [(1, w)] * 3 + [(1, w // 2)]


def test_model_encodes_raw_music_reduced_at_inference():
    """The composed model hands raw music to the encoder with its bridge's reduction when not
    training, and the full stack when the mix trains; both give the same vector."""
    from llama.m2ugen import M2UGen

    model = M2UGen.from_pretrained(None, preset="tiny", load_decoder=False)
    clip = (np.random.default_rng(1).standard_normal(int(12.5 * SR)) * 0.1).astype(np.float32)
    with torch.no_grad():
        reduced = model.encode_media("audio", [clip])
        v_reduced = model.bridge("audio", reduced)
    model.set_stage(1)  # bridges train
    full = model.encode_media("audio", [clip])
    assert isinstance(reduced, PooledAudio) and isinstance(full, EncodedAudio)
    v_full = model.bridge("audio", full)
    assert _rel(v_reduced, v_full.detach()) < 1e-5


def test_front_end_in_pieces_gives_the_frames_of_the_whole_window(tiny_mert):
    """The layer-norm front end runs in 2 s pieces; a 10 s window's frames equal the whole
    front end's (the module's unpatched forward, from its class)."""
    assert tiny_mert.front_end_chunked
    front = tiny_mert.model.feature_extractor
    rng = np.random.default_rng(2)
    for n in (int(9.9 * SR), 2 * SR + 399, 2 * SR + 400, 2 * 2 * SR + 80):
        x = torch.from_numpy(rng.standard_normal((2, n)).astype(np.float32))
        with torch.no_grad():
            pieces, whole = front(x), type(front).forward(front, x)
        assert pieces.shape == whole.shape
        assert torch.allclose(pieces, whole, atol=1e-5), (n, (pieces - whole).abs().max())


def test_group_norm_front_end_stays_whole():
    cfg = get_preset("tiny").mert
    enc = load_music_encoder(dataclasses.replace(cfg, tiny_config={
        **cfg.tiny_config, "feat_extract_norm": "group", "do_stable_layer_norm": False}))
    assert not enc.front_end_chunked and "forward" not in vars(enc.model.feature_extractor)


def test_features_do_not_depend_on_the_thread_count(tiny_mert):
    """The weight norm runs in float64 (`exact_weight_norm`): one process with 2 threads and a
    torchrun process with 1 compute the same bits (the sharded feature cache relies on it)."""
    rng = np.random.default_rng(4)
    clips = [rng.standard_normal(int(s * SR)).astype(np.float32) for s in (3.0, 1.7)]
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(tiny_mert.encode_items(clips))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*outs))
