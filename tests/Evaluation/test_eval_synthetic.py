"""Evaluation.synthetic: the held-out metrics score what the issue asks, honestly.

The model is the untrained tiny preset: these tests check what is measured and how (held-out
requests, the model's own [AUD] states, the shuffled baseline), not how well a model learns
(that is tests/test_learning.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data import synthetic, synthetic_text
from data.mixes import filter_split, stage_samples
from data.paths import DataPaths
from Evaluation.synthetic import MUSIC_REQUEST_TASKS, Evaluator
from llama.config import get_preset
from llama.m2ugen import M2UGen

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evsyn") / "data"
    synthetic.generate(out, seed=5, n=10)
    return out


@pytest.fixture(scope="module")
def evaluator(root: Path, one_thread) -> Evaluator:
    torch.manual_seed(0)
    return Evaluator(M2UGen(get_preset("tiny")), root, max_new_tokens=4)


def _train_texts(root: Path) -> list[str]:
    paths = DataPaths.from_root(root)
    texts = []
    for stage in (1, 2, 3):
        for s in filter_split(stage_samples(stage, paths), "train", paths):
            texts += [t for turn in s.turns for t in turn]
            texts += [s.music_caption] if s.music_caption else []
    return texts


def test_held_out_requests_ask_for_unseen_captions_with_unseen_phrasings(evaluator, root):
    requests = evaluator.test_samples(3, MUSIC_REQUEST_TASKS)
    assert {s.task for s in requests} == set(MUSIC_REQUEST_TASKS)
    train = _train_texts(root)
    train_prompts = set(train)
    for s in requests:
        assert not any(s.music_caption in t for t in train), s.music_caption
        assert s.turns[-1][0] not in train_prompts
        assert s.music_caption.lower() not in s.turns[-1][0].lower()


def test_projector_is_scored_on_the_models_own_aud_tokens(evaluator, monkeypatch):
    tok = evaluator.model.tokenizer
    answered = tok.encode("Here is the music:", bos=False, eos=False) + list(tok.aud_ids)
    seen: list[list[int]] = []

    def routing_model(prompts, media):
        return [list(answered) for _ in prompts]

    real = evaluator.projected

    def spy(ids, item):
        seen.append(ids)
        return real(ids, item)

    monkeypatch.setattr(evaluator, "answer", routing_model)
    monkeypatch.setattr(evaluator, "projected", spy)
    out = evaluator.music_requests()
    assert out["rate"] == 1.0 and out["n_projected"] == out["n"] == len(seen) > 1
    assert all(ids[-8:] == list(tok.aud_ids) for ids in seen)  # the generated tokens themselves
    assert -1.0 <= out["cosine"] <= 1.0 and 0.0 <= out["retrieval"] <= 1.0
    # this small dataset's few held-out requests may all ask for one combination: no baseline
    assert math.isnan(out["cosine_shuffled"]) or -1.0 <= out["cosine_shuffled"] <= 1.0


def test_requests_without_aud_tokens_score_zero(evaluator, monkeypatch):
    monkeypatch.setattr(evaluator, "answer", lambda prompts, media: [[5, 6] for _ in prompts])
    out = evaluator.music_requests()
    assert out["rate"] == 0.0 and out["n_projected"] == 0 and out["cosine"] == 0.0


def test_a_perfect_projector_beats_the_shuffled_baseline(evaluator):
    combos = [{"instrument": "piano", "register": "low", "tempo": "slow"},
              {"instrument": "guitar", "register": "high", "tempo": "fast"},
              {"instrument": "flute", "register": "high", "tempo": "slow"}]
    model = evaluator.model
    # any one description of the right music is a perfect answer (templates are arbitrary; the
    # first is short enough that the tiny decoder's 16-token limit keeps every attribute word)
    described = [synthetic.music_captions(c)[0] for c in combos]
    targets = model.decoder.targets(described, scale=model.cfg.projector.target_scale)
    perfect = evaluator.projector_scores(list(targets), combos)
    assert perfect["cosine"] == pytest.approx(1.0, abs=1e-5) and perfect["retrieval"] == 1.0
    assert perfect["cosine_shuffled"] < 0.999
    in_template = evaluator.projector_scores(list(targets), combos, [0, 0, 0])
    assert in_template["retrieval"] == 1.0
    assert in_template["cosine_shuffled"] < in_template["cosine"]
    # the same prediction scored in another template is no longer a perfect match
    assert evaluator.projector_scores(list(targets), combos, [1, 1, 1])["cosine"] < 0.999
    half = evaluator.projector_scores([targets[0], None, targets[2]], combos)
    assert half["cosine"] == pytest.approx(2 / 3, abs=1e-5) and half["n_projected"] == 2
    # the baseline averages the projected answers only, and so does the number compared with it
    assert half["cosine_routed"] == pytest.approx(1.0, abs=1e-5)
    both = evaluator.projector_scores([targets[0], targets[2]], [combos[0], combos[2]])
    assert half["cosine_shuffled"] == pytest.approx(both["cosine_shuffled"], abs=1e-6)


def test_understanding_requests_are_unseen_phrasings_about_held_out_media(evaluator, root,
                                                                         monkeypatch):
    asked: list[tuple[list[int], dict]] = []
    tok = evaluator.model.tokenizer

    def model(prompts, media):
        asked.extend(zip(prompts, media))
        # music (an [AUD] token) for images only; plain text otherwise
        return [[5, tok.aud_ids[0]] if "image" in m else [5, 6] for m in media]

    monkeypatch.setattr(evaluator, "answer", model)
    out = evaluator.understanding_requests()
    test_files = {str(root / f) for f in json.loads((root / "split.json").read_text())["test"]}
    train_prompts = set(_train_texts(root))
    phrasings = {m: {q for q, _ in v}
                 for m, v in synthetic_text.UNDERSTANDING_REQUESTS_HELD_OUT.items()}
    for prompt, media in asked:
        (modality, path), = media.items()
        assert str(path) in test_files
        text = tok.decode(prompt)
        request = next(q for q in phrasings[modality] if q in text)
        assert request not in train_prompts
    n_image = sum("image" in m for _, m in asked)
    assert out["n"] == len(asked) and n_image > 0
    assert out["aud_rate"] == pytest.approx(n_image / len(asked))
    assert out["aud_rate_per_modality"] == {"audio": 0.0, "image": 1.0, "video": 0.0}
    per_request = {tuple(r.split(": ", 1)): v for r, v in out["aud_rate_per_request"].items()}
    assert per_request and all(q in phrasings[m] for m, q in per_request)
    assert all(v == float(m == "image") for (m, _), v in per_request.items())


def test_text_requests_are_every_phrasing_for_every_combination_without_media(evaluator,
                                                                            monkeypatch):
    tok = evaluator.model.tokenizer
    asked: list[tuple[list[int], dict]] = []

    def model(prompts, media):  # music for the requests that name a register, text otherwise
        asked.extend(zip(prompts, media))
        return [[5, *tok.aud_ids] if "register" in tok.decode(p) else [5, 6] for p in prompts]

    monkeypatch.setattr(evaluator, "answer", model)
    out = evaluator.text_requests()
    phrasings = synthetic_text.TEXT_REQUESTS_HELD_OUT
    assert out["n"] == len(asked) == 16 * len(phrasings) and all(m == {} for _, m in asked)
    assert out["rate_per_phrasing"] == {p: float("{register}" in p) for p in phrasings}
    assert out["rate"] == pytest.approx(np.mean(["{register}" in p for p in phrasings]))


def test_music_requests_report_the_combination_the_answer_names(evaluator, monkeypatch):
    tok = evaluator.model.tokenizer
    requests = [s for s in evaluator.test_samples(3, MUSIC_REQUEST_TASKS) if s.output_music]
    truth = evaluator.truth(requests[0].output_music)
    wrong = dict(truth, tempo="slow" if truth["tempo"] == "fast" else "fast")
    # restates something else first; only the last caption is the answer
    text = (f"Sure. It was {synthetic.music_captions(wrong)[0].lower()} "
            f"{synthetic.music_captions(truth)[0]}")
    answer = tok.encode(text, bos=False, eos=False) + list(tok.aud_ids)
    monkeypatch.setattr(evaluator, "answer", lambda prompts, media: [list(answer)] * len(prompts))
    out = evaluator.music_requests()
    same = [evaluator.truth(s.output_music) == truth for s in requests]
    assert out["named"]["combination"] == pytest.approx(sum(same) / len(same))
