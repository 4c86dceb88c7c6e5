"""Text writers: published filters and parsers, deterministic templates, a chat LLM with
prefill, digit ban, retries and per-item seeding (tiny random Mistral built from a config)."""

from __future__ import annotations

import pytest
from tiny_models import CHATML_TEMPLATE, tiny_chat_llm

from DataSet.instructions import (
    InstructionRejected,
    LLMWriter,
    Request,
    TemplateWriter,
    relation_text,
)
from DataSet.prompts import TASKS, check, parse_numbered, parse_numbered_qa

pytestmark = pytest.mark.usefixtures("one_thread")


def test_published_filters():
    pool, img = TASKS["pool"], {"modality": "image"}
    assert check(pool, "Generate a calm tune that fits the picture.", img) is None
    assert "start" in check(pool, "Create a calm tune for the picture.", img)
    assert "digits" in check(pool, "Generate a 120 bpm tune for the image.", img)
    assert "parentheses" in check(pool, "Generate a tune (calm) for the image.", img)
    assert "short" in check(pool, "Generate music", img)
    resp = TASKS["response"]
    assert "start" in check(resp, "Here is a music for the image that is calm.",
                            {"modality": "video"})
    assert check(resp, "Here is a music for the video that is calm at 90 bpm.",
                 {"modality": "video"}) is None  # responses may hold numbers
    edit = TASKS["edit_rephrase"]
    text = {"text": "Make this music slightly slower, at 0.77x its original tempo."}
    assert check(edit, "Slow the track down a bit, to 0.77x of its tempo.", text) is None
    assert "amount 0.77" in check(edit, "Slow the track down a little bit.", text)


def test_published_parsers():
    text = "1. A piano.\n2. A slow piano piece.\n3. Piano notes\n4. It is calm.\n"
    assert parse_numbered(text, 4) == ["A piano.", "A slow piano piece.", "Piano notes",
                                       "It is calm."]
    with pytest.raises(ValueError, match="1..4"):
        parse_numbered("1. only one\n2. two", 4)
    qa = "".join(f"{i}. Question {i}?\nAnswer: Answer {i}.\n" for i in range(1, 6))
    assert parse_numbered_qa(qa, 5)[4] == ("Question 5?", "Answer 5.")
    with pytest.raises(ValueError, match="found 4"):
        parse_numbered_qa(qa.split("5.")[0], 5)


def test_template_writer_is_deterministic_and_passes_filters():
    w = TemplateWriter()
    reqs = [Request("pool:image:3", "pool", {"modality": "image", "index": 3}),
            Request("r", "response", {"modality": "image", "Modality": "Image",
                                      "music": "A calm piano melody.", "vision": "a red ball",
                                      "tags": "Piano, Ambient music"}),
            Request("e", "edit_rephrase", {"text": "Make this music much faster, at 2x its "
                                                   "original tempo."}),
            Request("p", "pair_answer", {"target": "Slow organ chords."})]
    a, b = w.write(reqs), w.write(reqs)
    assert a == b
    for r, text in zip(reqs, a):
        assert check(TASKS[r.task], text, r.fields) is None, (r.task, text)
    assert a[1] == "Here is a music for the image that is a calm piano melody, with Piano, " \
                   "Ambient music."
    assert a[2] == reqs[2].fields["text"]  # exact edit texts are kept as they are


def test_pair_relation_names_what_changes():
    f = {"input": "A jazz piano tune.", "target": "A rock guitar riff.",
         "input_attrs": {"instrument": "piano", "genre": "jazz"},
         "target_attrs": {"instrument": "electric guitar", "genre": "rock"}}
    assert relation_text(f) == ("Replace the piano with electric guitar and change the genre "
                                "from jazz to rock.")
    f["target_attrs"] = {"instrument": "piano", "genre": "rock"}
    assert relation_text(f) == "Change the genre from jazz to rock."
    f["input_attrs"] = f["target_attrs"] = {}
    assert relation_text(f) == "Change this music from a jazz piano tune into a rock guitar riff."


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    return tiny_chat_llm(tmp_path_factory.mktemp("mistral"), words_only=True)


def _pool_requests(n: int) -> list[Request]:
    return [Request(f"pool:video:{i}", "pool", {"modality": "video", "index": i})
            for i in range(n)]


def test_llm_writer_varied_texts_seeded_per_item_not_per_batch(llm_dir):
    w = LLMWriter(str(llm_dir), overrides={"max_new_tokens": 8}, retries=1, seed=1)
    assert w.identity.revision.startswith("local:")
    reqs = _pool_requests(4)
    batched = w.write(reqs)
    alone = [w.write([r])[0] for r in reqs]
    assert [str(x) for x in batched] == [str(x) for x in alone]  # batch size does not matter
    assert [str(x) for x in w.write(reqs[::-1])] == [str(x) for x in batched[::-1]]
    texts = [t for t in batched if isinstance(t, str)]
    assert len(texts) >= 3 and len(set(texts)) == len(texts)  # varied phrasings
    for t in texts:
        assert t.startswith("Generate") and "\n" not in t and not any(c.isdigit() for c in t)
    other = LLMWriter(str(llm_dir), overrides={"max_new_tokens": 8}, retries=1, seed=2)
    assert [str(x) for x in other.write(reqs)] != [str(x) for x in batched]


def test_llm_writer_uses_the_published_sampling_unless_overridden(llm_dir):
    w = LLMWriter(str(llm_dir), overrides={"temperature": None, "max_new_tokens": 5})
    s = w.settings(["pool", "qa_caption_caption"])["sampling"]
    assert (s["pool"]["temperature"], s["pool"]["top_p"], s["pool"]["top_k"]) == (1.9, 0.9, 50)
    assert "Mistral" in s["pool"]["source"] and "max_new_tokens" in s["pool"]["source"]
    assert (s["qa_caption_caption"]["temperature"], s["qa_caption_caption"]["top_k"]) == (0.5, 4)


def test_llm_writer_with_a_system_role_template(tmp_path):
    w = LLMWriter(str(tiny_chat_llm(tmp_path / "chatml", CHATML_TEMPLATE)),
                  overrides={"max_new_tokens": 6}, retries=0)
    prompt = w._prompt(Request("k", "pair_answer", {"input": "x", "target": "y"}))
    assert "<|im_start|>system\n- You are given description of a music" in prompt
    assert prompt.endswith("<|im_start|>assistant\nHere is a music that is")
    mistral = LLMWriter(str(tiny_chat_llm(tmp_path / "m")), overrides={"max_new_tokens": 6})
    folded = mistral._prompt(Request("k", "pair_answer", {"input": "x", "target": "y"}))
    assert folded.startswith("<s>[INST] - You are given description of a music")


def test_llm_writer_gives_up_after_retries_and_parses_multiline(llm_dir, monkeypatch):
    w = LLMWriter(str(llm_dir), overrides={"max_new_tokens": 4}, retries=2)
    calls = []

    def scripted(requests, attempt):
        calls.append(attempt)
        if requests[0].task == "pool":
            return ["Generate"] * len(requests)
        return ["1. a\n2. b\n3. c\n4. d"] * len(requests)

    monkeypatch.setattr(w, "_generate", scripted)
    res, parsed = w.write([Request("k", "pool", {"modality": "image"}),
                           Request("q", "qa_caption_tags", {"description": "rock, guitar"})])
    assert isinstance(res, InstructionRejected) and calls == [0, 1, 2, 0]
    assert "3 attempts rejected" in str(res) and parsed == ["a", "b", "c", "d"]
