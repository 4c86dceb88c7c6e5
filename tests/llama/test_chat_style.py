"""Chat styles travel with the weights: stored in config.json, read back from there, never from
the code's current default."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llama import chat_style
from llama import checkpoint as ckpt
from llama.chat_style import ChatStyle, ChatStyleError, StopRule, UnsupportedModalityError
from llama.config import get_preset
from llama.m2ugen import M2UGen

pytestmark = pytest.mark.usefixtures("one_thread")

ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately "
          "completes the request.\n\n### Instruction:\nDescribe the music.\n\n### Response:")
CHANGED = ChatStyle("changed", "[INST] {instruction} [/INST]", "\n[INST] {instruction} [/INST]")


def _write(model: M2UGen, folder, drop_style: bool = False):
    config = {"m2ugen": model.config_dict(), "stage": 3}
    if drop_style:  # what every config.json written before chat styles were stored looks like
        del config["m2ugen"]["chat_style"]
    return ckpt.write_checkpoint(folder, config=config, weights=ckpt.tuned_state_dict(
        model, model.tuned_parameter_names()))


@pytest.fixture(scope="module")
def tiny() -> M2UGen:
    return M2UGen(get_preset("tiny"), load_decoder=False)


def test_the_pinned_first_style_is_the_alpaca_template():
    assert chat_style.FIRST_STYLE.format_prompt("Describe the music.") == ALPACA
    assert chat_style.FIRST_STYLE.stop == StopRule()  # EOS, [AUD0] ends, the rest appended


def test_round_trip_through_json():
    for style in (chat_style.M2UGEN, chat_style.PUBLISHED_M2UGEN,
                  chat_style.PUBLISHED_MUMU_LLAMA, CHANGED):
        assert ChatStyle.from_dict(json.loads(json.dumps(dataclasses.asdict(style)))) == style


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(colour="red"), "colour"),
    (lambda d: d.update(first_turn="no placeholder"), "first_turn"),
    (lambda d: d["stop"].update(aud="sometimes"), "stop.aud"),
    (lambda d: d.update(modalities=["audio", "smell"]), "modalities"),
    (lambda d: d.pop("next_turn"), "next_turn"),
])
def test_a_malformed_stored_style_names_the_field(edit, field):
    d = dataclasses.asdict(chat_style.M2UGEN)
    edit(d)
    with pytest.raises(ChatStyleError, match=field):
        ChatStyle.from_dict(d)


def test_a_stored_style_survives_a_new_default_template(tiny, tmp_path, monkeypatch):
    folder = _write(tiny, tmp_path / "ckpt")
    before = tiny.build_prompt("Describe the music.", [], 16)[0]
    monkeypatch.setattr(chat_style, "DEFAULT", CHANGED)
    assert get_preset("tiny").chat_style == CHANGED  # new models do get the new default ...
    loaded = M2UGen.from_pretrained(str(folder), load_decoder=False)
    assert loaded.cfg.chat_style == chat_style.M2UGEN  # ... a checkpoint keeps its own
    assert loaded.build_prompt("Describe the music.", [], 16)[0] == before
    assert loaded.tokenizer.decode(before) == ALPACA


def test_a_checkpoint_without_a_stored_style_loads_with_the_first_style(tiny, tmp_path,
                                                                          monkeypatch):
    folder = _write(tiny, tmp_path / "old", drop_style=True)
    monkeypatch.setattr(chat_style, "DEFAULT", CHANGED)
    loaded = M2UGen.from_pretrained(str(folder), load_decoder=False)
    assert loaded.cfg.chat_style == chat_style.FIRST_STYLE
    assert loaded.tokenizer.decode(loaded.build_prompt("Describe the music.", [], 16)[0]) == ALPACA


def test_the_tiny_tokenizer_does_not_follow_the_default_template(monkeypatch):
    """Its vocabulary is what trained tiny checkpoints depend on: trained on the pinned style."""
    from llama.tokenizer import tiny_corpus

    before = tiny_corpus()
    monkeypatch.setattr(chat_style, "DEFAULT", CHANGED)
    assert tiny_corpus() == before
    assert "[INST]" not in before and "### Instruction:" in before


def test_modalities_are_checked():
    chat_style.PUBLISHED_MUMU_LLAMA.check_modalities(["audio", "image"])
    with pytest.raises(UnsupportedModalityError, match="video input is not supported"):
        chat_style.PUBLISHED_MUMU_LLAMA.check_modalities(["audio", "video"])


def test_training_keeps_the_template_and_teaches_our_ending(tiny):
    trained = chat_style.PUBLISHED_MUMU_LLAMA.for_training()
    assert (trained.first_turn, trained.next_turn) == (chat_style.PUBLISHED_MUMU_LLAMA.first_turn,
                                                       chat_style.PUBLISHED_MUMU_LLAMA.next_turn)
    assert trained.stop == StopRule() and trained.music_route == "projector"
    assert trained.modalities == chat_style.ALL_MODALITIES
    assert chat_style.M2UGEN.for_training() is chat_style.M2UGEN
    model = M2UGen(dataclasses.replace(get_preset("tiny"),
                                       chat_style=chat_style.PUBLISHED_M2UGEN), load_decoder=False)
    model.set_stage(3)
    assert model.cfg.chat_style.stop == StopRule()


def test_answer_text_cuts_the_stop_string():
    assert chat_style.PUBLISHED_M2UGEN.answer_text(" A piano.\n### Instruction") == "A piano."
    assert chat_style.M2UGEN.answer_text(" A piano.\n###") == "A piano.\n###"
