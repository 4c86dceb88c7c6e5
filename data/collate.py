"""Batch items of `data.dataset.M2UGenDataset` for training (batches larger than one).

Why: the published code could only train with batch size 1 (no padding). Here token sequences are
right-padded, media are grouped per modality so each frozen encoder runs once per batch on only the
samples that have that modality, and the [AUD] positions of music answers are gathered for the
output projector.

Batch dict keys (B = kept samples, T = longest sequence in the batch):
- "ids": list[str] sample ids; "tasks": list[str] task names.
- "input_ids": (B, T) long, right-padded with `pad_id`.
- "attention_mask": (B, T) long, 1 = real token, 0 = padding.
- "labels": (B, T) long, token ids on assistant answers (incl. EOS and [AUD] ids), -100 elsewhere
  (prompts and padding).
- "lengths": (B,) long, real length of each sequence.
- "modality_mask": (B, 3) bool, presence of audio / image / video (order `llama.config.MODALITIES`).
- "media": {modality: {"index": (k,) long indices into the batch, "paths": list[str] of k paths,
  "data": list of k loaded values (raw media or cached features, whatever the dataset's loader
  returned; empty list when the dataset has no loader)}} for every modality, k possibly 0.
- "aud_positions": (B, 8) long, positions of [AUD0..7] in `input_ids` (0 where no music output).
- "music_mask": (B,) bool, samples whose answer produces music.
- "music_captions": list[str | None], decoder target captions (None without music output).
- "output_music": list[str | None], target music files when known.
- "skipped": list of (id, category, detail) for items skipped by the dataset's on_error="skip"
  policy (merge into the main-process dataset with `dataset.record_skips`). If every item of a
  batch was skipped, B = 0 and the tensors are empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from llama.config import AUD_TOKENS, MODALITIES
from llama.prompt import IGNORE_INDEX

N_AUD = len(AUD_TOKENS)


@dataclass
class Collator:
    """Callable collate_fn (picklable for DataLoader workers); `pad_id` = the tokenizer's pad id."""

    pad_id: int
    pad_to_multiple_of: int = 1  # e.g. 8 for tensor-core friendly shapes

    def __call__(self, items: Sequence[dict]) -> dict[str, Any]:
        skipped = [tuple(it["skipped"]) for it in items if "skipped" in it]
        items = [it for it in items if "skipped" not in it]
        b = len(items)
        lengths = [int(it["input_ids"].numel()) for it in items]
        t = max(lengths, default=0)
        m = max(1, self.pad_to_multiple_of)
        t = -(-t // m) * m
        input_ids = torch.full((b, t), self.pad_id, dtype=torch.long)
        labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((b, t), dtype=torch.long)
        aud_positions = torch.zeros((b, N_AUD), dtype=torch.long)
        music_mask = torch.zeros(b, dtype=torch.bool)
        modality_mask = torch.zeros((b, len(MODALITIES)), dtype=torch.bool)
        media: dict[str, dict[str, Any]] = {
            mod: {"index": [], "paths": [], "data": []} for mod in MODALITIES
        }
        for i, it in enumerate(items):
            n = lengths[i]
            if it["labels"].numel() != n:
                raise ValueError(f"{it['id']}: labels and input_ids differ in length")
            input_ids[i, :n] = it["input_ids"]
            labels[i, :n] = it["labels"]
            attention_mask[i, :n] = 1
            if it.get("aud_positions") is not None:
                aud_positions[i] = it["aud_positions"]
                music_mask[i] = True
            for mod, path in it["media_paths"].items():
                if mod not in media:
                    raise ValueError(f"{it['id']}: unknown modality {mod!r}")
                modality_mask[i, MODALITIES.index(mod)] = True
                media[mod]["index"].append(i)
                media[mod]["paths"].append(path)
                if mod in it.get("media", {}):
                    media[mod]["data"].append(it["media"][mod])
        for mod, group in media.items():
            if group["data"] and len(group["data"]) != len(group["index"]):
                raise ValueError(f"modality {mod}: some samples have loaded media and some do not")
            group["index"] = torch.tensor(group["index"], dtype=torch.long)
        return {
            "ids": [it["id"] for it in items],
            "tasks": [it["task"] for it in items],
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "lengths": torch.tensor(lengths, dtype=torch.long),
            "modality_mask": modality_mask,
            "media": media,
            "aud_positions": aud_positions,
            "music_mask": music_mask,
            "music_captions": [it.get("music_caption") for it in items],
            "output_music": [it.get("output_music") for it in items],
            "skipped": skipped,
        }
