"""Evaluation.carriage: the ridge probe itself, and the frozen tiny encoders on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data import synthetic
from Evaluation import carriage


def test_ridge_reads_a_linear_attribute_and_not_noise():
    rng = np.random.default_rng(0)
    labels = [("a", "b", "c")[i % 3] for i in range(300)]
    signal = np.array([[lab == v for v in "abc"] for lab in labels], dtype=np.float64)
    x = np.concatenate([signal @ rng.standard_normal((3, 5)), rng.standard_normal((300, 20))], 1)
    train = np.arange(300) < 240
    assert carriage.ridge_accuracy(x, labels, train) == 1.0
    shuffled = list(rng.permutation(labels))
    assert carriage.ridge_accuracy(x, shuffled, train) < 0.6  # chance is 1/3


def test_ridge_strength_is_chosen_without_looking_at_the_test_split(monkeypatch):
    rng = np.random.default_rng(1)
    labels = [("a", "b")[i % 2] for i in range(300)]
    x = rng.standard_normal((300, 10)) + np.array([[lab == "a"] for lab in labels]) * 0.5
    train = np.arange(300) < 240
    scored: list[int] = []
    real = carriage._accuracy

    def spy(z, y, w):
        scored.append(len(z))
        return real(z, y, w)

    monkeypatch.setattr(carriage, "_accuracy", spy)
    carriage.ridge_accuracy(x, labels, train)
    n_val = round(240 * carriage.VAL_FRACTION)
    assert scored == [n_val] * len(carriage.RIDGE_STRENGTHS) + [60]  # the test split: once


def test_audio_pooling_keeps_each_hidden_state():
    feats = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # (S, T, H)
    v = carriage.pooled(feats, "audio")
    assert v.shape == (2 * 4 * 2,)
    assert np.allclose(v[:8], feats.double().mean(1).flatten().numpy())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("carriage") / "data"
    synthetic.generate(root, seed=0, n=60)
    return root


def test_video_brightness_is_carried_and_cli_prints_json(data, capsys):
    assert carriage.main(["--data_root", str(data), "--sets", "MUVideo"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_test"] == {"MUVideo": 12}
    assert set(out["MUVideo"]) == {"colour", "brightness"}
    assert out["MUVideo"]["brightness"] >= 0.9  # a whole-scene ramp: the easiest attribute


def test_cli_rejects_missing_ground_truth_and_unknown_sets(tmp_path, data, capsys):
    assert carriage.main(["--data_root", str(tmp_path)]) == 2
    assert "attributes.json is missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        carriage.main(["--data_root", str(data), "--sets", "Nope"])
    assert exc.value.code == 2
