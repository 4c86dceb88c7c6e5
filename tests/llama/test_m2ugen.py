"""The composed model: no media I/O, no mutation of the caller's config, configured scales."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from llama.config import get_preset
from llama.m2ugen import GenerationSettings, M2UGen, apply_path_overrides

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    cfg = get_preset("tiny")
    cfg = dataclasses.replace(cfg, projector=dataclasses.replace(cfg.projector, target_scale=4.0))
    return M2UGen(cfg, load_decoder=False)


def test_construction_leaves_the_callers_config_alone():
    cfg = get_preset("tiny")
    before = dataclasses.asdict(cfg)
    M2UGen(cfg, load_decoder=True)
    assert dataclasses.asdict(cfg) == before


def test_path_overrides_return_a_new_config():
    cfg = get_preset("tiny")
    before = dataclasses.asdict(cfg)
    new = apply_path_overrides(cfg, {"vit_path": "/x/vit", "llama_path": None})
    assert new.vit.path == "/x/vit" and dataclasses.asdict(cfg) == before
    with pytest.raises(ValueError, match="unknown path override"):
        apply_path_overrides(cfg, {"vitpath": "/x"})


def test_paths_are_not_media(model):
    with pytest.raises(TypeError, match="MediaFeatures"):
        model.encode_media("image", ["/some/file.png"])


def test_decoded_arrays_and_feature_tensors_give_the_same_batch(model):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    feats = model.encoder("image").encode_items([image])[0]
    a = model.encode_media("image", [image])
    b = model.encode_media("image", [feats])
    assert torch.equal(a, b)


class _RecordingDecoder:
    def __init__(self) -> None:
        self.kwargs: dict = {}

    def synthesize(self, cond, **kwargs):
        self.kwargs = kwargs
        return [np.zeros(8, np.float32)], 16000


def test_synthesis_divides_by_the_configured_target_scale(model, monkeypatch):
    recorder = _RecordingDecoder()
    # monkeypatch restores the shared module-scoped model's decoder after this test
    monkeypatch.setattr(model, "_decoder", recorder)
    ids = model.tokenizer.encode("hello", bos=True)
    model.synthesize(ids, None, "hello", GenerationSettings(audio_seconds=1.0))
    assert recorder.kwargs["scale"] == 4.0


def test_the_shared_model_keeps_its_own_decoder(model):
    """Runs after the recording test (file order): the fake decoder did not leak into it."""
    assert not isinstance(model._decoder, _RecordingDecoder)


def test_int8_at_construction_keeps_logits_close():
    from llama.quantize import Int8Linear

    cfg = get_preset("tiny")
    ref = M2UGen(cfg, load_decoder=False)
    q = M2UGen(cfg, load_decoder=False, quantize="int8")
    assert isinstance(q.backbone.layers[0].attention.wq, Int8Linear)
    ids = [ref.tokenizer.encode("compose a slow piano melody", bos=True)]
    with torch.no_grad():
        logits_ref = ref.backbone(torch.tensor(ids))
        logits_q = q.backbone(torch.tensor(ids))
    spread = float(logits_ref.std())
    assert float((logits_ref - logits_q).abs().max()) < 0.05 * spread  # random weights: no
    # argmax check here (untrained logits are near-ties); the quality benchmark measures agreement


def test_unsupported_quantization_is_one_clear_error():
    from llama.quantize import QuantizationError

    with pytest.raises(QuantizationError, match="int4"):
        M2UGen(get_preset("tiny"), load_decoder=False, quantize="int4")


def test_generated_ids_carry_the_special_token_that_ended_the_answer(model):
    reply = model.chat("describe a piano", settings=GenerationSettings(max_new_tokens=40))
    assert reply.generated_ids[: len(reply.token_ids)] == reply.token_ids
    tail = reply.generated_ids[len(reply.token_ids):]
    if len(reply.token_ids) < 40:  # stopped early: by EOS or by [AUD0] (then all 8 follow)
        assert tail in ([model.tokenizer.eos_id], list(model.tokenizer.aud_ids))
    else:
        assert tail == []


def test_training_loss_is_the_cross_entropy_of_the_full_logits(model):
    """The loss computes the vocabulary head only where a target follows; it must equal the
    cross-entropy over all positions with the prompt ignored, value and gradients."""
    torch.manual_seed(0)
    vocab = model.backbone.logits(torch.zeros(1, model.cfg.llama.dim)).shape[-1]
    tokens = torch.randint(0, vocab, (2, 12))
    labels = tokens.clone()
    labels[0, :5], labels[1, :8] = -100, -100
    labels[1, 10:] = -100  # right padding
    probe = model.backbone.layers[0].attention.lora_wq_l2.weight  # a PEFT tensor (nonzero grad)

    loss = model(tokens, labels).ce
    model.zero_grad()
    model(tokens, labels).loss.backward()
    grad = probe.grad.clone()
    assert grad.abs().max() > 0

    model.zero_grad()
    full = model.backbone(tokens)
    ref = torch.nn.functional.cross_entropy(full[:, :-1].flatten(0, 1), labels[:, 1:].flatten(),
                                            ignore_index=-100)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, probe.grad, rtol=1e-5, atol=1e-7)
    model.zero_grad()
