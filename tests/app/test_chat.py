"""Chat sessions: each keeps its own history, music and folder; a turn's media reach the answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from app.chat import ChatSession, TurnResult
from app.engine import LoadedModel, TextDelta, reply_record
from app.errors import InputError
from app.loading import ModelChoice, load_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine() -> LoadedModel:
    return load_model(ModelChoice(None, "tiny", {}, "cpu", "float32"))


def test_sessions_keep_their_own_history_music_and_folder(engine, tmp_path):
    a = ChatSession(engine, tmp_path / "a")
    b = ChatSession(engine, tmp_path / "b")
    settings = engine.settings({"max_new_tokens": 4, "audio_seconds": 0.2})
    with pytest.raises(InputError, match="no generated music to edit"):
        list(a.stream("make it faster", settings=settings, edit_last_music=True))
    assert a.history == []  # a failed turn is not part of the conversation
    *_, done = a.stream("compose a tune", settings=settings, music="always")
    assert done.wav == tmp_path / "a" / "music-1.wav" and a.last_music == done.wav
    assert a.history[0][1].endswith("[AUD7]")  # fed back in the training format
    list(b.stream("hello", settings=settings, music="never"))
    assert [q for q, _ in b.history] == ["hello"] and b.last_music is None
    *_, done = a.stream("now slower", settings=settings, music="never", edit_last_music=True)
    assert len(a.history) == 2 and done.wav is None
    record = reply_record(done.reply, None)
    assert record["token_ids"] == done.reply.generated_ids and record["audio"] is None
    assert record["token_ids"][: len(done.reply.token_ids)] == done.reply.token_ids
    a.close()
    assert not (tmp_path / "a").exists() and (tmp_path / "b").exists()


def test_a_turn_streams_text_then_its_result(engine, tmp_path):
    session = ChatSession(engine, tmp_path / "s")
    events = list(session.stream("describe a cello", settings=engine.settings(
        {"max_new_tokens": 6, "temperature": 0.0}), music="never"))
    *deltas, done = events
    assert isinstance(done, TurnResult) and all(type(e) is TextDelta for e in deltas)
    assert "".join(e.text for e in deltas).strip() == done.reply.text


def test_an_empty_message_is_refused_and_not_remembered(engine, tmp_path):
    session = ChatSession(engine, tmp_path / "s")
    with pytest.raises(InputError, match="the prompt is empty"):
        list(session.stream("   ", settings=engine.settings({"max_new_tokens": 2})))
    assert session.history == [] and session.turns == 0


# ---------------------------------------------------------------------------------------------
# An image changes the answer (with open adapter gates)


@pytest.fixture(scope="module")
def gated(tmp_path_factory) -> LoadedModel:
    """A tiny model of its own whose adapter gates can be opened. The gates start at 0 (tanh(0)
    = 0: the media path adds nothing, so any image gives the same answer); a trained model has
    them open."""
    return load_model(ModelChoice(None, "tiny", {}, "cpu", "float32"))


def _set_gates(engine: LoadedModel, value: float) -> None:
    gates = [p for n, p in engine.model.backbone.named_parameters() if n.endswith(".gate")]
    assert gates, "the tiny backbone has adapter layers"
    with torch.no_grad():
        for gate in gates:
            gate.fill_(value)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    pixels = {"red": np.full((40, 40, 3), (200, 0, 0), np.uint8),
              "black": np.zeros((40, 40, 3), np.uint8),
              "white": np.full((40, 40, 3), 255, np.uint8),
              "noise": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)}
    for name, rgb in pixels.items():
        Image.fromarray(rgb).save(folder / f"{name}.png")
    return {name: str(folder / f"{name}.png") for name in pixels}


def _answer(engine: LoadedModel, image: str, tmp_path) -> tuple[list[int], torch.Tensor]:
    """One session turn about `image`: (answer token ids, next-token logits after the prompt)."""
    first: list[torch.Tensor] = []

    def record(module, args, kwargs, output):
        if not first:  # the prompt's forward pass (later calls decode one token each)
            first.append(output[:, -1].detach().float().clone())

    hook = engine.model.backbone.register_forward_hook(record, with_kwargs=True)
    try:
        session = ChatSession(engine, tmp_path / f"s{len(list(tmp_path.iterdir()))}")
        settings = engine.settings({"max_new_tokens": 8, "temperature": 0.0})
        *_, done = session.stream("Describe the image.", media={"image": image},
                                  settings=settings, music="never")
    finally:
        hook.remove()
    assert session.history[0][0] == "Describe the image."
    return list(done.reply.token_ids), first[0]


def test_the_answer_depends_on_the_image(gated, images, tmp_path):
    _set_gates(gated, 0.0)  # closed: the image cannot matter (the test can tell)
    closed = {name: _answer(gated, path, tmp_path) for name, path in images.items()}
    assert all(torch.equal(c[1], closed["red"][1]) for c in closed.values())
    assert len({tuple(ids) for ids, _ in closed.values()}) == 1

    _set_gates(gated, 1.0)  # open: tanh(1) = 0.76 of each adapter head reaches the answer
    opened = {name: _answer(gated, path, tmp_path) for name, path in images.items()}
    red_ids, red_logits = opened["red"]
    for name in ("black", "white", "noise"):
        assert (opened[name][1] - red_logits).abs().max() > 1e-3, name  # different logits
    assert len({tuple(ids) for ids, _ in opened.values()}) > 1  # and different answers
    assert not torch.equal(red_logits, closed["red"][1])  # opening the gates changed it
    again_ids, again_logits = _answer(gated, images["red"], tmp_path)
    assert again_ids == red_ids and torch.equal(again_logits, red_logits)  # same image, same
