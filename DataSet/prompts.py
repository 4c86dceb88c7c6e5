"""The kinds of text the pipelines write (`Task`), with the prompts and sampling settings the
published pipelines used.

The prompt strings below are data that define the datasets: they are the ones the published
scripts sent to their LLMs (MU-LLaMA `MusicQA/*_process.py` and M2UGen `Datasets/MUEdit`,
`Datasets/MUImage`, `Datasets/MUVideo` with MPT-7B-chat; MuMu-LLaMA `DataSet/MUEdit`,
`DataSet/MUVideo/caption.py` with Mistral-7B-Instruct-v0.2). Each `Task` formats its user (and
system) message from named fields, so the same request serves the LLM writer and the templates.

Sampling, as the published scripts ran it (read off their `generate` calls, not their comments):
- MPT-7B-chat `bot()`: temperature 0.5, top_p 1, top_k 4, repetition penalty 1, up to 8192 new
  tokens (the chat stop tokens end it); MusicQA's open questions used temperature 0.4.
- Mistral `generate_text()`: do_sample with temperature 1.9, top_p 0.9, top_k 50, 128 new
  tokens (a commented-out 0.5 / 40 was not what ran).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from DataSet.sampling import Sampling

MPT = Sampling(temperature=0.5, top_p=1.0, top_k=4, repetition_penalty=1.0, max_new_tokens=8192,
               source="published MPT-7B-chat scripts: bot() defaults")
MPT_OPEN = Sampling(temperature=0.4, top_p=1.0, top_k=4, repetition_penalty=1.0,
                    max_new_tokens=8192, source="published MusicQA open_bot() defaults")
MISTRAL = Sampling(temperature=1.9, top_p=0.9, top_k=50, repetition_penalty=1.0,
                   max_new_tokens=128, source="published Mistral-7B-Instruct generate_text()")

#: The MusicQA captioning questions (MU-LLaMA MusicQA/generate_dataset.py `q_set`).
CAPTION_QUESTIONS = ("Describe the audio", "Describe the audio in detail",
                     "What do you hear in the audio?", "What can be inferred from the audio?")


def parse_numbered(text: str, n: int) -> list[str]:
    """Answers of a list numbered 1..n, one per line ("1. ..."); ValueError when absent."""
    found = {int(m.group(1)): m.group(2).strip()
             for m in re.finditer(r"^\s*(\d+)\.\s+(.+?)\s*$", text, flags=re.M)}
    answers = [found.get(i, "") for i in range(1, n + 1)]
    if not all(answers):
        raise ValueError(f"expected answers numbered 1..{n}, found {sorted(found)}")
    return answers


def parse_numbered_qa(text: str, n: int) -> list[tuple[str, str]]:
    """n pairs "k. question" + "Answer: answer" on the next line (the published format)."""
    pairs = [(q.strip(), a.strip()) for q, a in re.findall(
        r"^\s*\d+\.\s+(.+?)\s*\n\s*Answer:\s*(.+?)\s*$", text, flags=re.M)]
    pairs = [(q, a) for q, a in pairs if q and a]
    if len(pairs) < n:
        raise ValueError(f"expected {n} numbered questions with 'Answer:' lines, "
                         f"found {len(pairs)}")
    return pairs[:n]


@dataclass(frozen=True)
class Task:
    """One kind of text: its messages (format strings over a request's fields), the opening the
    answer must have (prefilled for the LLM), the published sampling and the filters."""

    name: str
    user: str
    system: str = ""
    prefix: str = ""
    sampling: Sampling = MPT
    no_digits: bool = False
    no_parens: bool = False
    keep_numbers: str = ""  # a field whose numbers the answer must repeat (the edit's amount)
    min_words: int = 2  # words after the required opening
    max_words: int = 80
    parse: Optional[Callable[[str], Any]] = None  # multi-line answers -> value (ValueError: bad)

    def messages(self, fields: dict[str, Any]) -> tuple[str, str, str]:
        """(system, user, prefix) for these fields."""
        return (self.system.format(**fields), self.user.format(**fields),
                self.prefix.format(**fields))


def numbers(text: str) -> list[str]:
    return re.findall(r"\d+(?:\.\d+)?", text)


def check(task: Task, text: str, fields: dict[str, Any]) -> Optional[str]:
    """The reason a one-line text is rejected, or None (published filters plus ours)."""
    prefix = task.prefix.format(**fields)
    if not text.strip():
        return "empty"
    if prefix and not text.startswith(prefix):
        return f"does not start with {prefix!r}"
    if re.search(r"[\x00-\x1f\x7f\ufffd]", text):
        return "contains control characters or undecodable bytes"
    if task.no_digits and re.search(r"\d", text):
        return "contains digits"
    if task.no_parens and re.search(r"[()]", text):
        return "contains parentheses"
    if task.keep_numbers:
        lost = [n for n in numbers(str(fields[task.keep_numbers])) if n not in numbers(text)]
        if lost:
            return f"lost the amount {lost[0]} of the edit"
    words = len(text.split()) - len(prefix.split())
    if words < task.min_words:
        return f"too short ({words} words after the required opening)"
    if len(text.split()) > task.max_words:
        return f"too long ({len(text.split())} words)"
    return None


# ---------------------------------------------------------------------------------------------
# MUImage / MUVideo (MuMu-LLaMA v2: DataSet/MUVideo/caption.py, used for both modalities)

POOL = Task(
    "pool", prefix="Generate", sampling=MISTRAL, no_digits=True, no_parens=True, min_words=3,
    max_words=30,
    user=("Rephrase the instruction within 20 words, output should still start with "
          "'Generate'\nInstruction: Generate a music to match the {modality}."))

RESPONSE = Task(
    "response", prefix="Here is a music for the {modality} that is", sampling=MISTRAL,
    min_words=3, max_words=150,
    user=("Follow these steps and generate a response according to the descriptions of the "
          "Music, its {Modality} and Tags:\n"
          "1.Your response should start with: 'Here is a music for the {modality} that is ...'\n"
          "2.You should describe main instruments in the music in terms of the instruments in "
          "Tags.\n"
          "3.Refer to the {modality} when describing the music.\n"
          "4.You need to complete the response given the Music, {Modality} and Tags.\n"
          "5.Output the response incorporating the {Modality} into the Music.\n\n"
          "Music: {music}\n\n{Modality}: {vision}\n\nTags: {tags}"))

# ---------------------------------------------------------------------------------------------
# MUEdit: exact edits (MuMu-LLaMA v2 `MUEdit/*/caption.py`), matched pairs (M2UGen v1 `MUEdit`)

EDIT_REPHRASE = Task(
    "edit_rephrase", sampling=MISTRAL, keep_numbers="text", min_words=3, max_words=40,
    user=("You need to rephrase the following text without changing the original semantics:\n"
          "Text: {text}"))

EDIT_ANSWER = Task(
    "edit_answer", prefix="Here is a music that is", sampling=MISTRAL, min_words=2, max_words=60,
    user=("You will follow these steps and give an answer in terms of the text:\n"
          "1.You answer should start with: 'Here is a music that is ...'\n"
          "2.You need to respond to the instruction given in the text.\n"
          "3.Output the answer in a single sentence.\nText: {instruction}"))

PAIR_INSTRUCTION = Task(
    "pair_instruction", sampling=MPT, min_words=3, max_words=60,
    system=("- You are given description of input and target music\n"
            "- You will give a single line instruction of the form to change input music to "
            "target music\n- Give the instruction based on the music descriptions"),
    user="Input: {input}, Target: {target}")

PAIR_ANSWER = Task(
    "pair_answer", prefix="Here is a music that is", sampling=MPT, min_words=2, max_words=80,
    system=("- You are given description of a music\n"
            "- You will give a single line answer of the form 'Here is a music that is ....'\n"
            "- Complete the answer based on the music description"),
    user="Input: {input}, Target: {target}")

# ---------------------------------------------------------------------------------------------
# MusicQA (MU-LLaMA MusicQA/musiccaps_process.py; MTT/MTG: the same from a list of tags)

_QA_FROM = {"caption": "a caption describing an audio",
            "tags": "a list of tags describing an audio"}


def _qa_caption_system(source: str) -> str:
    based = "the caption" if source == "caption" else "the list of tags"
    return (f"- You are given {_QA_FROM[source]}\n"
            f"- You will give answers from the audio to these questions based on {based}\n"
            "    1. Describe the audio\n    2. Describe the audio in detail\n"
            "    3. What do you hear in the audio\n    4. What can be inferred from the audio\n"
            "- The answers should be numbered")


def _qa_open_system(source: str) -> str:
    return (f"- You are given {_QA_FROM[source]}\n"
            "- You will create 5 questions related to the audio based on the sentence along with "
            "answers\n"
            "- The questions should be relating to things like tempo of the music, mood of the "
            "music, instruments used, inference, etc\n"
            "- The question answers should be long form\n- The question answers should be numbered")


def _qa_tasks(source: str) -> tuple[Task, Task]:
    return (Task(f"qa_caption_{source}", system=_qa_caption_system(source), user="{description}",
                 sampling=MPT, parse=lambda t: parse_numbered(t, 4), max_words=2000),
            Task(f"qa_open_{source}", system=_qa_open_system(source), user="{description}",
                 sampling=MPT_OPEN, parse=lambda t: parse_numbered_qa(t, 5), max_words=2000))


TASKS: dict[str, Task] = {t.name: t for t in (
    POOL, RESPONSE, EDIT_REPHRASE, EDIT_ANSWER, PAIR_INSTRUCTION, PAIR_ANSWER,
    *_qa_tasks("caption"), *_qa_tasks("tags"))}
