"""Text writers: an instruction-tuned LLM (transformers chat template) or templates.

A `Request` names a task (`DataSet.prompts.TASKS`: messages, required opening, published
sampling, filters) and the fields its messages are formatted from. Two writers return one
result per request (a string, a parsed value for multi-line tasks, or an `InstructionRejected`):

- `LLMWriter`: any causal LM with a chat template (Mistral-Instruct, MPT-chat, ...), batched with
  left padding. The answer is PREFILLED with the task's opening ("Generate", "Here is a music
  that is", ...); digits are banned while decoding for tasks that forbid them; the filters are
  checked after decoding and a failing answer is retried (`retries` times) before the item is
  recorded as failed. Sampling is seeded per request key and attempt (`DataSet.sampling`), so
  the texts do not depend on the batch size or on which other items share a batch.
- `TemplateWriter`: deterministic texts built from the fields (no model), for offline builds
  and tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from jinja2.exceptions import TemplateError

from DataSet.common import ItemError, ModelInfo, check_loaded, resolve_revision
from DataSet.prompts import CAPTION_QUESTIONS, TASKS, Task, check
from DataSet.sampling import Sampling, generate_kwargs
from util.hashing import stable_int


class InstructionRejected(ItemError):
    """No answer passed the filters within the allowed retries."""


@dataclass
class Request:
    key: str  # stable per item and role: seeds the sampling and the template choice
    task: str
    fields: dict[str, Any] = field(default_factory=dict)


def lower_first(s: str) -> str:
    s = s.strip().rstrip(".")
    return s[:1].lower() + s[1:] if s else s


# ---------------------------------------------------------------------------------------------
# Templates

#: Hand-written phrasings of "Generate a music to match the image/video." (the template pool).
TEMPLATE_POOL = (
    "Generate a music to match the {m}.",
    "Generate a piece of music that fits this {m}.",
    "Generate music that suits the mood of the {m}.",
    "Generate a soundtrack for this {m}.",
    "Generate a music that goes well with the {m}.",
    "Generate background music for the {m}.",
    "Generate a tune that captures the feeling of this {m}.",
    "Generate music inspired by what the {m} shows.",
)
QUESTION_BANK = ("What is the tempo of the music?", "What mood does the music convey?",
                 "Which instruments can be heard in the music?", "What genre is this music?",
                 "Where could this music be used?", "Is the music fast or slow?",
                 "How would you describe the melody?", "What is the overall feeling of the piece?")


def relation_text(fields: dict[str, Any]) -> str:
    """An edit instruction saying what changes from the input to the target: the instrument
    and genre when both clips carry them, else the two descriptions."""
    a, b = fields.get("input_attrs") or {}, fields.get("target_attrs") or {}
    parts = []
    if a.get("instrument") and b.get("instrument") and a["instrument"] != b["instrument"]:
        parts.append(f"replace the {a['instrument']} with {b['instrument']}")
    if a.get("genre") and b.get("genre") and a["genre"] != b["genre"]:
        parts.append(f"change the genre from {a['genre']} to {b['genre']}")
    if parts:
        text = " and ".join(parts)
        return text[0].upper() + text[1:] + "."
    return (f"Change this music from {lower_first(fields['input'])} into "
            f"{lower_first(fields['target'])}.")


class TemplateWriter:
    """Deterministic, model-free text from the fields (offline mode)."""

    identity = ModelInfo(name="template", revision="v2", role="writer")

    def settings(self, tasks: Sequence[str]) -> dict[str, Any]:
        return {"writer": "template", "tasks": list(tasks)}

    def write(self, requests: Sequence[Request]) -> list[Any]:
        return [self._one(r) for r in requests]

    def _one(self, r: Request) -> Any:
        f = r.fields
        if r.task == "pool":
            return TEMPLATE_POOL[int(f["index"]) % len(TEMPLATE_POOL)].format(m=f["modality"])
        if r.task == "response":
            tags = f", with {f['tags']}" if f.get("tags") else ""
            return (f"Here is a music for the {f['modality']} that is "
                    f"{lower_first(f['music'])}{tags}.")
        if r.task == "edit_rephrase":
            return f["text"]
        if r.task == "edit_answer":
            return f"Here is a music that is {f['phrase']}."
        if r.task == "pair_instruction":
            return relation_text(f)
        if r.task == "pair_answer":
            return f"Here is a music that is {lower_first(f['target'])}."
        if r.task.startswith("qa_caption"):
            return [f"The music is {lower_first(f['description'])}."] * len(CAPTION_QUESTIONS)
        if r.task.startswith("qa_open"):
            start = stable_int(r.key) % len(QUESTION_BANK)
            qs = [QUESTION_BANK[(start + i) % len(QUESTION_BANK)] for i in range(int(f["n"]))]
            return [(q, f"The music is {lower_first(f['description'])}.") for q in qs]
        raise ValueError(f"no template for task {r.task!r}")


# ---------------------------------------------------------------------------------------------
# A chat LLM


@dataclass
class LLMWriter:
    """A chat LLM writing the texts; see the module docstring."""

    model_path: str
    device: str = "cpu"
    dtype: Any = None
    overrides: dict[str, Any] = field(default_factory=dict)  # CLI sampling flags (None = task's)
    retries: int = 3
    seed: int = 0
    revision: Optional[str] = None
    allow_random_weights: bool = False

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
        model, info = AutoModelForCausalLM.from_pretrained(
            self.model_path, revision=self.revision, dtype=self.dtype or torch.float32,
            output_loading_info=True)
        check_loaded(self.model_path, info, self.allow_random_weights)
        self.model = model.to(self.device).eval()
        self.identity = ModelInfo(self.model_path, resolve_revision(self.model_path,
                                                                    self.revision), "writer")
        self._digit_ids = [[i] for tok, i in self.tok.get_vocab().items()
                           if re.search(r"\d", self.tok.convert_tokens_to_string([tok]))]

    def sampling(self, task: Task) -> Sampling:
        return task.sampling.override(**self.overrides)

    def settings(self, tasks: Sequence[str]) -> dict[str, Any]:
        """What decides the texts, for the manifest: per task its sampling and its source."""
        return {"writer": "llm", "retries": self.retries,
                "sampling": {t: self.sampling(TASKS[t]).as_dict() for t in tasks}}

    def _prompt(self, r: Request) -> str:
        system, user, prefix = TASKS[r.task].messages(r.fields)
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}]
        try:
            text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except TemplateError:
            # templates without a system role (Mistral): put the instructions in the user turn
            msgs = [{"role": "user", "content": f"{system}\n\n{user}"}]
            text = self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return text + prefix

    def _generate(self, requests: Sequence[Request], attempt: int) -> list[str]:
        import torch

        task = TASKS[requests[0].task]
        enc = self.tok([self._prompt(r) for r in requests], return_tensors="pt", padding=True,
                       add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        n_in = enc["input_ids"].shape[1]
        kw = generate_kwargs(self.model, self.sampling(task),
                             [f"{r.key}#{attempt}" for r in requests], n_in, self.seed,
                             pad_token_id=self.tok.pad_token_id,
                             bad_words_ids=self._digit_ids if task.no_digits else None)
        with torch.no_grad():
            out = self.model.generate(**enc, **kw)
        return [task.messages(r.fields)[2] + self._continuation(row[n_in - 1], row[n_in:])
                for r, row in zip(requests, out.tolist())]

    def _continuation(self, last: int, new: list[int]) -> str:
        """Decode new tokens as they continue the prompt: decoding them alone would drop the
        word-initial space of SentencePiece tokens ("that is" + "music" -> "that ismusic")."""
        dec = self.tok.decode
        head = dec([last], skip_special_tokens=True)
        return dec([last, *new], skip_special_tokens=True)[len(head):]

    def _accept(self, r: Request, text: str) -> tuple[Any, Optional[str]]:
        task = TASKS[r.task]
        if task.parse is not None:
            try:
                return task.parse(text), None
            except ValueError as e:
                return None, str(e)
        line = text.strip().split("\n")[0].strip()
        return line, check(task, line, r.fields)

    def write(self, requests: Sequence[Request]) -> list[Any]:
        results: list[Any] = [InstructionRejected("not attempted")] * len(requests)
        reasons: dict[int, list[str]] = {i: [] for i in range(len(requests))}
        for task in dict.fromkeys(r.task for r in requests):  # one sampling per generate call
            pending = [i for i, r in enumerate(requests) if r.task == task]
            for attempt in range(self.retries + 1):
                if not pending:
                    break
                texts = self._generate([requests[i] for i in pending], attempt)
                still = []
                for i, text in zip(pending, texts):
                    value, why = self._accept(requests[i], text)
                    if why is None:
                        results[i] = value
                    else:
                        reasons[i].append(f"{why}: {text[:60]!r}")
                        still.append(i)
                pending = still
            for i in pending:
                results[i] = InstructionRejected(
                    f"{self.retries + 1} attempts rejected: " + "; ".join(reasons[i]))
        return results


def make_writer(kind: str, model: Optional[str] = None, **kwargs: Any
                ) -> TemplateWriter | LLMWriter:
    """`kind` "template" or "llm" (then `model` is a hub id or a local folder)."""
    if kind == "template":
        return TemplateWriter()
    if kind == "llm":
        if not model:
            raise ValueError("--writer llm needs --model (hub id or local folder)")
        return LLMWriter(model, **kwargs)
    raise ValueError(f"writer must be 'template' or 'llm', got {kind!r}")
