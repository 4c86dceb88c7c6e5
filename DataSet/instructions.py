"""Instruction writers: an instruction-tuned LLM (transformers chat template) or templates.

Every request names a `Task` (the published system prompt, the form the answer must take) and
the context text (captions, tags). Two writers return one string per request:

- `LLMWriter`: any causal LM with a chat template (Mistral-Instruct, MPT-chat...), batched with
  left padding, the published sampling settings as defaults (temperature 0.5, top_p 1.0,
  top_k 4, repetition penalty 1.0). The answer is PREFILLED with the published form ("Generate a
  music for the image that is", "Here is a music that is", ...), so it starts right by
  construction; digits are banned during decoding for tasks that forbid them; the published
  filters are still checked after decoding and a failing answer is retried with a new seed,
  `retries` times, before the item is recorded as failed (`InstructionRejected`).
- `TemplateWriter`: deterministic sentences built from the context (the choice of template is a
  stable hash of the item key), for offline use and tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from jinja2.exceptions import TemplateError

from DataSet.common import ItemError, ModelInfo, resolve_revision
from util.hashing import stable_int


class InstructionRejected(ItemError):
    """No answer passed the filters within the allowed retries."""


@dataclass(frozen=True)
class Task:
    """One kind of text to write: the system prompt, a required opening, and filters."""

    name: str
    system: str
    prefix: str  # the answer must start with this (prefilled for the LLM)
    no_digits: bool = True
    min_words: int = 2  # words after the required opening
    max_words: int = 80


_MUSIC_IMAGE = "You are given the description of a music and of an image."
_MUSIC_VIDEO = "You are given the description of a music and of a video."
_EDIT = "You are given the descriptions of an input music and of a target music."
_ONE_LINE = "Answer with a single line."

TASKS: dict[str, Task] = {t.name: t for t in (
    Task("muimage_human", f"{_MUSIC_IMAGE} Write a single line instruction of the form "
         "'Generate a music for the image that is ....', based on the image and the music. "
         f"{_ONE_LINE}", "Generate a music for the image that is"),
    Task("muimage_gpt", f"{_MUSIC_IMAGE} Write a single line answer of the form 'Here is a "
         "music that is ....', based on the image and the music. " + _ONE_LINE,
         "Here is a music that is"),
    Task("muvideo_human", f"{_MUSIC_VIDEO} Write a single line instruction of the form "
         "'Generate a music for the video that is ....'. " + _ONE_LINE,
         "Generate a music for the video that is"),
    Task("muvideo_gpt", f"{_MUSIC_VIDEO} Write a single line answer of the form 'Here is a "
         "music that is ....'. " + _ONE_LINE, "Here is a music that is"),
    Task("muedit_human", f"{_EDIT} Write a single line instruction that changes the input "
         "music into the target music. Do not use the words input or target. " + _ONE_LINE,
         "", min_words=4),
    Task("muedit_gpt", "You are given the description of a music. Write a single line answer of "
         "the form 'Here is a music that is ....'. " + _ONE_LINE, "Here is a music that is"),
    Task("musicqa_answer", "You are given a description of a music clip and a question about "
         "it. Answer the question from the description only, in one or two sentences.", "",
         no_digits=False, min_words=3, max_words=120),
)}


def check(task: Task, text: str) -> str | None:
    """The published filters; returns the reason a text is rejected, or None."""
    if not text.strip():
        return "empty"
    if task.prefix and not text.startswith(task.prefix):
        return f"does not start with {task.prefix!r}"
    if re.search(r"[\x00-\x1f\x7f\ufffd]", text):
        return "contains control characters or undecodable bytes"
    if task.no_digits and re.search(r"\d", text):
        return "contains digits"
    words = len(text.split()) - len(task.prefix.split())
    if words < task.min_words:
        return f"too short ({words} words after the required opening)"
    if len(text.split()) > task.max_words:
        return f"too long ({len(text.split())} words)"
    return None


@dataclass
class Request:
    key: str  # stable per item and role (seeds the template choice and the sampling)
    task: str
    context: str  # the user message: captions, tags, question


def _lower_first(s: str) -> str:
    s = s.strip().rstrip(".")
    return s[:1].lower() + s[1:] if s else s


class TemplateWriter:
    """Deterministic, model-free text from the context (offline mode)."""

    identity = ModelInfo(name="template", revision="v1", role="writer")

    def write(self, requests: Sequence[Request]) -> list[str]:
        return [self._one(r) for r in requests]

    def _one(self, r: Request) -> str:
        fields = dict(re.findall(r"^(\w[\w ]*):\s*(.*)$", r.context, flags=re.M))
        music = _lower_first(fields.get("Music") or fields.get("Target") or r.context)
        pick = stable_int(r.key) % 2
        if r.task in ("muimage_human", "muvideo_human"):
            what = "image" if r.task.startswith("muimage") else "video"
            scene = _lower_first(fields.get(what.capitalize(), ""))
            tail = f", to go with {scene}" if scene and pick else ""
            return f"Generate a music for the {what} that is {music}{tail}."
        if r.task in ("muimage_gpt", "muvideo_gpt", "muedit_gpt"):
            return f"Here is a music that is {music}."
        if r.task == "muedit_human":
            verb = ("Turn this music into", "Change this music so that it becomes")[pick]
            return f"{verb} {music}."
        if r.task == "musicqa_answer":
            desc = _lower_first(fields.get("Description", r.context))
            return f"The music is {desc}."
        raise ValueError(f"no template for task {r.task!r}")


@dataclass
class Sampling:
    """The published settings (MPT-7B-chat scripts) as defaults."""

    temperature: float = 0.5
    top_p: float = 1.0
    top_k: int = 4
    repetition_penalty: float = 1.0
    max_new_tokens: int = 96


@dataclass
class LLMWriter:
    """A chat LLM writing the texts; see the module docstring."""

    model_path: str
    device: str = "cpu"
    dtype: Any = None
    sampling: Sampling = field(default_factory=Sampling)
    retries: int = 3
    seed: int = 0
    revision: str | None = None

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(self.model_path, revision=self.revision)
        if self.tok.chat_template is None:
            raise ValueError(f"{self.model_path}: tokenizer has no chat template "
                             "(use an instruction-tuned model, or the template writer)")
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.tok.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_path, revision=self.revision, dtype=self.dtype or torch.float32
        ).to(self.device).eval()
        self.identity = ModelInfo(self.model_path, resolve_revision(self.model_path,
                                                                    self.revision), "writer")
        self._digit_ids = [[i] for tok, i in self.tok.get_vocab().items()
                           if re.search(r"\d", self.tok.convert_tokens_to_string([tok]))]

    def _prompt(self, r: Request) -> str:
        task = TASKS[r.task]
        msgs = [{"role": "system", "content": task.system}, {"role": "user", "content": r.context}]
        try:
            text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except TemplateError:
            # templates without a system role (Mistral): put the instructions in the user turn
            msgs = [{"role": "user", "content": f"{task.system}\n\n{r.context}"}]
            text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return text + task.prefix

    def _generate(self, requests: Sequence[Request], attempt: int) -> list[str]:
        import torch

        texts = [self._prompt(r) for r in requests]
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        s = self.sampling
        no_digits = all(TASKS[r.task].no_digits for r in requests)
        torch.manual_seed(stable_int(f"{self.seed}:{attempt}:{requests[0].key}") % 2**63)
        with torch.no_grad():
            out = self.model.generate(
                **enc, do_sample=s.temperature > 0, temperature=s.temperature or None,
                top_p=s.top_p, top_k=s.top_k, repetition_penalty=s.repetition_penalty,
                max_new_tokens=s.max_new_tokens, pad_token_id=self.tok.pad_token_id,
                bad_words_ids=(self._digit_ids or None) if no_digits else None,
            )
        n_in = enc["input_ids"].shape[1]
        answers = [self._continuation(row[n_in - 1], row[n_in:]) for row in out.tolist()]
        return [(TASKS[r.task].prefix + a).strip().split("\n")[0].strip()
                for r, a in zip(requests, answers)]

    def _continuation(self, last: int, new: list[int]) -> str:
        """Decode new tokens as they continue the prompt: decoding them alone would drop the
        word-initial space of SentencePiece tokens ("that is" + "music" -> "that ismusic")."""
        dec = self.tok.decode
        head = dec([last], skip_special_tokens=True)
        return dec([last, *new], skip_special_tokens=True)[len(head):]

    def write(self, requests: Sequence[Request]) -> list[str | Exception]:
        results: list[str | Exception] = [InstructionRejected("not attempted")] * len(requests)
        pending = list(range(len(requests)))
        reasons: dict[int, list[str]] = {i: [] for i in pending}
        for attempt in range(self.retries + 1):
            if not pending:
                break
            texts = self._generate([requests[i] for i in pending], attempt)
            still = []
            for i, text in zip(pending, texts):
                why = check(TASKS[requests[i].task], text)
                if why is None:
                    results[i] = text
                else:
                    reasons[i].append(f"{why}: {text[:60]!r}")
                    still.append(i)
            pending = still
        for i in pending:
            results[i] = InstructionRejected(
                f"{self.retries + 1} attempts rejected: " + "; ".join(reasons[i]))
        return results


def make_writer(kind: str, model: str | None = None, **kwargs: Any) -> TemplateWriter | LLMWriter:
    """`kind` "template" or "llm" (then `model` is a hub id or a local folder)."""
    if kind == "template":
        return TemplateWriter()
    if kind == "llm":
        if not model:
            raise ValueError("--writer llm needs --model (hub id or local folder)")
        return LLMWriter(model, **kwargs)
    raise ValueError(f"writer must be 'template' or 'llm', got {kind!r}")
