"""Instruction writers: published filters, deterministic templates, a chat LLM with prefill,
digit ban and retries (tiny random Mistral built from a config)."""

from __future__ import annotations

import pytest
from tiny_models import CHATML_TEMPLATE, tiny_chat_llm

from DataSet.instructions import (
    TASKS,
    InstructionRejected,
    LLMWriter,
    Request,
    Sampling,
    TemplateWriter,
    check,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_published_filters():
    t = TASKS["muimage_human"]
    assert check(t, "Generate a music for the image that is calm and slow.") is None
    assert "start" in check(t, "Create a music for the image that is calm.")
    assert "digits" in check(t, "Generate a music for the image that is 120 bpm fast.")
    assert "short" in check(t, "Generate a music for the image that is")
    assert check(TASKS["musicqa_answer"], "It is played at 120 beats per minute.") is None


def test_template_writer_is_deterministic_and_passes_filters():
    w = TemplateWriter()
    reqs = [Request("muimage:a.png:human", "muimage_human",
                    "Music: A calm piano melody.\nImage: a red disc on grass"),
            Request("muimage:a.png:gpt", "muimage_gpt", "Music: A calm piano melody.\nImage: x"),
            Request("e:human", "muedit_human", "Input: fast drums\nTarget: slow organ chords"),
            Request("q", "musicqa_answer", "Description: soft flute\nQuestion: Describe")]
    a, b = w.write(reqs), w.write(reqs)
    assert a == b
    for r, text in zip(reqs, a):
        assert check(TASKS[r.task], text) is None, (r.task, text)
    assert a[0].startswith("Generate a music for the image that is a calm piano melody")
    assert "slow organ chords" in a[2]


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return tiny_chat_llm(tmp_path_factory.mktemp("mistral"))


def test_llm_writer_prefills_bans_digits_and_batches(llm_dir):
    w = LLMWriter(str(llm_dir), sampling=Sampling(max_new_tokens=12), retries=2, seed=1)
    assert w.identity.revision.startswith("local:")
    reqs = [Request(f"k{i}", "muvideo_human", f"Music: slow flute {i}\nVideo: a blue ball")
            for i in range(3)]
    out = w.write(reqs)
    assert len(out) == 3
    for text in out:
        if isinstance(text, Exception):  # random weights may still fail the length filter
            assert isinstance(text, InstructionRejected) and "attempts rejected" in str(text)
            continue
        assert text.startswith("Generate a music for the video that is")
        assert not any(c.isdigit() for c in text)
        assert "\n" not in text
    assert w.write(reqs) == out  # seeded per item and attempt: reproducible


def test_llm_writer_with_a_system_role_template(tmp_path):
    w = LLMWriter(str(tiny_chat_llm(tmp_path / "chatml", CHATML_TEMPLATE)),
                  sampling=Sampling(max_new_tokens=6), retries=0)
    prompt = w._prompt(Request("k", "muimage_gpt", "Music: x"))
    assert "<|im_start|>system" in prompt and prompt.endswith("Here is a music that is")


def test_llm_writer_gives_up_after_retries(llm_dir, monkeypatch):
    w = LLMWriter(str(llm_dir), sampling=Sampling(max_new_tokens=4), retries=2)
    calls = []

    def always_bad(requests, attempt):
        calls.append(attempt)
        return ["Generate"] * len(requests)

    monkeypatch.setattr(w, "_generate", always_bad)
    (res,) = w.write([Request("k", "muimage_human", "Music: x")])
    assert isinstance(res, InstructionRejected) and calls == [0, 1, 2]
    assert "3 attempts rejected" in str(res)
