"""`train_m2ugen.py --dtype int8`: the frozen projections are int8 while a stage trains.

The gradient equivalence with the dequantized float32 model is tested in
tests/llama/test_quantize_training.py; here the command line runs a short stage 3 (LoRA, biases,
norms, gates, new rows, projector) and a stage 1 (bridges) end to end.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import train_m2ugen
from llama import checkpoint as ckpt
from llama.config import get_preset
from llama.quantize import Int8Linear

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _stage(data, tmp_path, stage: str, *extra: str):
    calls = {"grad": 0, "layers": set()}
    real = Int8Linear.forward

    def spy(self, x):
        if torch.is_grad_enabled():
            calls["grad"] += 1
            calls["layers"].add(id(self))
        return real(self, x)

    out = tmp_path / f"stage{stage}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Int8Linear, "forward", spy)
        code = train_m2ugen.main([
            "--stage", stage, "--preset", "tiny", "--data_root", str(data),
            "--output_dir", str(out), "--epochs", "1", "--batch_size", "4", "--log_every", "1",
            "--feature_cache", str(tmp_path / "cache"), "--dtype", "int8",
            "--projector_refit_steps", "0", *extra])
    assert code == 0
    # every projection of every layer and the LM head ran the int8 kernel with gradients on
    n_layers = get_preset("tiny").llama.n_layers
    assert calls["grad"] > 0 and len(calls["layers"]) == 7 * n_layers + 1
    steps = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "step" in s]
    assert steps and all(math.isfinite(s["loss"]) and s["grad_norm"] > 0 for s in steps)
    folder = ckpt.resolve_checkpoint(out)
    weights = ckpt.read_weights(folder)
    assert {t.dtype for t in weights.values()} == {torch.float32}  # tuned parts stay float32
    assert not any("qweight" in k or "scales" in k for k in weights)  # frozen weights not saved
    return steps


def test_int8_frozen_projections_train_stages_1_and_3(small_synthetic, tmp_path):
    _stage(small_synthetic, tmp_path, "1")
    steps = _stage(small_synthetic, tmp_path, "3", "--init_from", str(tmp_path / "stage1"))
    assert any(s["mse"] > 0 for s in steps)  # music answers: the projector trained too
