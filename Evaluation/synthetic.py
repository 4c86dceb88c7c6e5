"""Does a trained model understand and route? Measured on the held-out split of `data.synthetic`.

    python -m Evaluation.synthetic --model OUT/stage3 --data_root DATA [--predictions FILE]

prints one JSON object:
- `audio_caption`, `image_caption`, `video_caption`: attribute accuracy of captions generated for
  held-out media with the stage-1 prompt (empty instruction). An attribute counts as right when
  the caption names its true value and no other value of that attribute; the number is the mean
  over attributes (per-attribute numbers under `details`).
- `audio_caption_silenced`: the same with every clip replaced by silence of equal length: near
  chance if the answer really comes from the audio.
- `projector_cosine`: for each held-out music request (MUImage, MUVideo, MUEdit: its music's
  attribute combination never occurs in training, its phrasing is unseen, and it does not contain
  the target caption's wording), the model answers freely; the projector reads the hidden states
  of the [AUD0..7] tokens the model generated itself (the inference path) and is scored by cosine
  against the decoder target of the requested music. The data describes music with caption
  templates chosen at random, and the tiny decoder's conditioning depends more on the wording
  than on the attribute words, so the target is the true attribute combination written in the
  template the model's answer used (`data.synthetic.music_template_of`; if the answer uses none,
  the best of all templates); a request answered without the [AUD] tokens scores 0.
- `projector_cosine_routed`: the same over the requests answered with [AUD] tokens only (the
  misses are the routing metric's business).
- `projector_cosine_shuffled`: the routed answers scored against another held-out request's
  combination (mean over the requests whose combination differs): what a projector output carries
  that is not specific to the request. The projector means something only by the margin of
  `projector_cosine_routed` over this (both average the same answers; `projector_cosine` also
  counts unrouted requests as 0, which the baseline does not).
  `details.music_requests.retrieval`: share of projected requests whose nearest description
  (same template) among all 16 attribute combinations is the true one (chance 1/16);
  `details.music_requests.named`: share of answers whose text names the requested value, per
  attribute and for the whole combination (the projector can only follow the text).
- `qa`: share of held-out MusicQA questions whose answer names the right value (and no other).
- `aud_tokens_on_music_requests`: share of held-out music requests (unseen phrasings) whose
  generated answer ends with the eight [AUD] tokens.
- `aud_tokens_on_questions`: share of held-out MusicQA answers containing any [AUD] token.
- `aud_tokens_on_unseen_understanding`: share of captioning and question requests phrased in ways
  no training item uses (`data.synthetic_text.UNDERSTANDING_REQUESTS_HELD_OUT`), asked of the
  held-out music clips, images and videos, answered with any [AUD] token. Per modality, and how
  often those answers name the right values, under `details.understanding_requests`.
- `aud_tokens_on_text_requests`: share of text-only requests to compose
  (`data.synthetic_text.TEXT_REQUESTS_HELD_OUT`, every attribute combination) answered with the
  eight [AUD] tokens; per phrasing under `details.text_requests`.
`details.projector_cosine_teacher_forced` keeps the older, optimistic diagnostic (held-out MUCaps
captions in the stage-2 format, the answer teacher-forced). With `--predictions FILE`, one JSON
line per held-out item: file, task, prompt, output; `--output FILE` also writes the JSON there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from itertools import product
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from app.errors import InputError, bad_input_errors, fail
from app.engine import LoadedModel
from app.loading import ModelChoice, load_model
from data.dataset import tokenize_sample
from data.features import MediaFeatures
from data.media import load_audio
from data.mixes import filter_split, stage_samples
from data.paths import DataPaths
from data.schemas import Sample
from data.synthetic import AUDIO_ATTRIBUTES, music_captions, music_template_of
from data.synthetic_text import (
    TEXT_REQUESTS_HELD_OUT,
    UNDERSTANDING_REQUESTS_HELD_OUT,
    last_music_caption,
)
from Evaluation.ground_truth import missing_ground_truth
from llama.generation import generate
from llama.m2ugen import M2UGen
from llama.prompt import encode_prompt
from util.atomic import write_text

CAPTION_TASKS = {"audio_caption": "audio", "image_caption": "image", "video_caption": "video"}
MUSIC_REQUEST_TASKS = ("image_to_music", "video_to_music", "music_edit")


def music_space() -> list[dict[str, str]]:
    """Every music attribute combination (16), in a fixed order."""
    return [dict(zip(AUDIO_ATTRIBUTES, v)) for v in product(*AUDIO_ATTRIBUTES.values())]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def attribute_hits(text: str, truth: dict[str, str],
                   vocab: dict[str, Sequence[str]]) -> dict[str, bool]:
    """Per attribute: the true value is named and no other value of that attribute is."""
    found = words(text)
    out = {}
    for attr, value in truth.items():
        named = {v for v in vocab[attr] if v in found}
        out[attr] = named == {value}
    return out


def _music_attrs(truth: dict[str, str]) -> dict[str, str]:
    return {k: truth[k] for k in AUDIO_ATTRIBUTES}


def attribute_vocab(attributes: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    """Every value seen per attribute name (from the ground truth file)."""
    vocab: dict[str, set[str]] = {}
    for truth in attributes.values():
        for k, v in truth.items():
            vocab.setdefault(k, set()).add(v)
    return vocab


class Evaluator:
    def __init__(self, model: M2UGen, data_root: Path, batch_size: int = 16,
                 max_new_tokens: int = 48, media: Optional[MediaFeatures] = None) -> None:
        self.model, self.root = model, data_root
        self.media = media or MediaFeatures(model)
        self.paths = DataPaths.from_root(data_root)
        self.attributes: dict[str, dict[str, str]] = json.loads(
            (data_root / "attributes.json").read_text())
        self.vocab = attribute_vocab(self.attributes)
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.predictions: list[dict[str, Any]] = []

    def truth(self, path: str) -> dict[str, str]:
        rel = str(Path(path).resolve().relative_to(self.root.resolve()))
        return self.attributes[rel]

    def test_samples(self, stage: int, tasks: Iterable[str]) -> list[Sample]:
        keep = set(tasks)
        samples = filter_split(stage_samples(stage, self.paths), "test", self.paths)
        return [s for s in samples if s.task in keep]

    # -- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def answer(self, prompts: list[list[int]], media: list[dict[str, Any]]) -> list[list[int]]:
        """Greedy answers, batched; `media[i]` maps modality -> path or decoded array."""
        outs: list[list[int]] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = range(start, min(start + self.batch_size, len(prompts)))
            groups: dict[str, tuple[list[int], Any]] = {}
            for modality in ("audio", "image", "video"):
                rows = [j - start for j in chunk if modality in media[j]]
                if rows:
                    items = [self.media.item_features(modality, media[start + r][modality])
                             for r in rows]
                    groups[modality] = (rows, self.model.encode_media(modality, items))
            feats = self.model.modality_features(groups, len(chunk))
            outs += generate(
                self.model.backbone, [prompts[j] for j in chunk], self.max_new_tokens,
                eos_id=self.model.tokenizer.eos_id, modality_features=feats,
                pad_id=self.model.tokenizer.pad_id,
            )
        return outs

    def record(self, sample_file: str, task: str, prompt: str, output: str) -> None:
        self.predictions.append({"file": sample_file, "task": task, "prompt": prompt,
                                 "output": output})

    # -- metrics -------------------------------------------------------------------------------

    def captioning(self, task: str, silence: bool = False) -> dict[str, Any]:
        modality = CAPTION_TASKS[task]
        samples = self.test_samples(1, [task])
        tok = self.model.tokenizer
        prompts = [encode_prompt(tok, s.turns[0][0]) for s in samples]
        media = []
        for s in samples:
            item: Any = s.media[modality]
            if silence:
                wave = load_audio(item, self.model.cfg.mert.sample_rate)
                item = np.zeros_like(wave)
            media.append({modality: item})
        outputs = self.answer(prompts, media)
        per_attr: dict[str, list[bool]] = {}
        for s, out in zip(samples, outputs):
            text = tok.decode(out)
            name = f"{task}_silenced" if silence else task
            self.record(s.media[modality], name, s.turns[0][0], text)
            for attr, ok in attribute_hits(text, self.truth(s.media[modality]), self.vocab).items():
                per_attr.setdefault(attr, []).append(ok)
        per = {a: float(np.mean(v)) for a, v in per_attr.items()}
        return {"accuracy": float(np.mean(list(per.values()))) if per else float("nan"),
                "per_attribute": per, "n": len(samples)}

    @torch.no_grad()
    def projector_teacher_forced(self) -> dict[str, Any]:
        """Diagnostic only: the caption is the instruction and the teacher-forced answer."""
        samples = self.test_samples(2, ["text_to_music"])
        model, tok = self.model, self.model.tokenizer
        cos = []
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start:start + self.batch_size]
            tokd = [tokenize_sample(s, tok, model.cfg.llama.max_seq_len) for s in chunk]
            length = max(len(t.input_ids) for t in tokd)
            ids = torch.full((len(chunk), length), tok.pad_id, dtype=torch.long)
            for i, t in enumerate(tokd):
                ids[i, :len(t.input_ids)] = torch.tensor(t.input_ids)
            hidden = model.projector_hidden(ids)
            pos = torch.tensor([t.aud_positions for t in tokd])
            pred = model.project_music(hidden, pos).float().cpu()
            target = model.decoder.targets([s.music_caption for s in chunk],
                                           scale=model.cfg.projector.target_scale)
            cos += torch.nn.functional.cosine_similarity(
                pred.flatten(1), target.flatten(1), dim=1).tolist()
        return {"cosine": float(np.mean(cos)) if cos else float("nan"), "n": len(cos)}

    def music_qa(self) -> dict[str, Any]:
        samples = self.test_samples(3, ["music_qa"])
        tok = self.model.tokenizer
        aud = set(tok.aud_ids)
        prompts, media, refs = [], [], []
        for s in samples:
            truth = self.truth(s.media["audio"])
            for question, answer in s.turns:
                asked = {a for a, v in truth.items() if v in words(answer)}
                if len(asked) != 1:
                    continue  # not a single-attribute question: nothing to score
                attr = asked.pop()
                prompts.append(encode_prompt(tok, question))
                media.append({"audio": s.media["audio"]})
                refs.append((s, question, attr, truth[attr]))
        outputs = self.answer(prompts, media)
        right, with_aud = [], []
        for (s, question, attr, value), out in zip(refs, outputs):
            text = tok.decode(out)
            self.record(s.media["audio"], "music_qa", question, text)
            right.append(attribute_hits(text, {attr: value}, self.vocab)[attr])
            with_aud.append(any(t in aud for t in out))
        return {"accuracy": float(np.mean(right)) if right else float("nan"),
                "aud_rate": float(np.mean(with_aud)) if with_aud else float("nan"),
                "n": len(right)}

    def understanding_requests(self) -> dict[str, Any]:
        """Captioning and question requests in phrasings no training item uses
        (`data.synthetic_text.UNDERSTANDING_REQUESTS_HELD_OUT`), asked of the held-out media of the
        captioning sets (the k-th item of a modality gets its k-th phrasing, cycling): the share
        answered with any [AUD] token (routing: should be near 0), and the share of answers that
        name the asked attribute's value (a description: every attribute's), per modality; and
        the share per phrasing (a tiny model fails by phrasing: that names what to fix)."""
        tok = self.model.tokenizer
        aud = set(tok.aud_ids)
        prompts, media, refs = [], [], []
        for task, modality in CAPTION_TASKS.items():
            phrasings = UNDERSTANDING_REQUESTS_HELD_OUT[modality]
            for k, s in enumerate(self.test_samples(1, [task])):
                request, asked = phrasings[k % len(phrasings)]
                truth = self.truth(s.media[modality])
                prompts.append(encode_prompt(tok, request))
                media.append({modality: s.media[modality]})
                refs.append((s.media[modality], modality, request,
                             truth if asked is None else {asked: truth[asked]}))
        outputs = self.answer(prompts, media)
        routed: dict[str, list[bool]] = {}
        right: dict[str, list[float]] = {}
        per_request: dict[str, list[bool]] = {}
        for (path, modality, request, expected), out in zip(refs, outputs):
            music = any(t in aud for t in out)
            text = tok.decode(out) + (" [AUD]" if music else "")  # decode drops [AUD] ids
            self.record(path, f"{modality}_understanding", request, text)
            routed.setdefault(modality, []).append(music)
            per_request.setdefault(f"{modality}: {request}", []).append(music)
            hits = attribute_hits(text, expected, self.vocab)
            right.setdefault(modality, []).append(float(np.mean(list(hits.values()))))
        every = [r for v in routed.values() for r in v]
        return {"aud_rate": float(np.mean(every)) if every else float("nan"), "n": len(every),
                "aud_rate_per_modality": {m: float(np.mean(v)) for m, v in routed.items()},
                "accuracy_per_modality": {m: float(np.mean(v)) for m, v in right.items()},
                "aud_rate_per_request": {r: float(np.mean(v)) for r, v in per_request.items()}}

    def text_requests(self) -> dict[str, Any]:
        """Text-only requests to compose (`data.synthetic_text.TEXT_REQUESTS_HELD_OUT`, every
        phrasing for every attribute combination, no media): the share answered with the eight
        [AUD] tokens, overall and per phrasing."""
        tok = self.model.tokenizer
        aud = list(tok.aud_ids)
        space = music_space()
        asked = [(p, p.format(**attrs)) for attrs in space for p in TEXT_REQUESTS_HELD_OUT]
        outputs = self.answer([encode_prompt(tok, text) for _, text in asked], [{}] * len(asked))
        per_phrasing: dict[str, list[bool]] = {}
        for (phrasing, text), out in zip(asked, outputs):
            music = out[-len(aud):] == aud
            self.record("", "text_to_music", text,
                        tok.decode(out) + (" [AUD]" if music else ""))
            per_phrasing.setdefault(phrasing, []).append(music)
        every = [m for v in per_phrasing.values() for m in v]
        return {"rate": float(np.mean(every)), "n": len(every),
                "rate_per_phrasing": {p: float(np.mean(v)) for p, v in per_phrasing.items()}}

    def music_requests(self) -> dict[str, Any]:
        """Routing of held-out requests, and the projector on the model's own [AUD] states."""
        samples = [s for s in self.test_samples(3, MUSIC_REQUEST_TASKS)
                   if s.output_music is not None]
        tok = self.model.tokenizer
        prompts = [encode_prompt(tok, s.turns[-1][0], s.turns[:-1]) for s in samples]
        media = [{m: p for m, p in s.media.items()} for s in samples]
        outputs = self.answer(prompts, media)
        aud = list(tok.aud_ids)
        ends, preds, targets, templates, worded = [], [], [], [], 0
        named: dict[str, list[bool]] = {}  # the answer names the requested value, per attribute
        for s, prompt, item, out in zip(samples, prompts, media, outputs):
            ok = out[-len(aud):] == aud
            ends.append(ok)
            text = tok.decode(out) + (" " + "".join(f"[AUD{i}]" for i in range(8)) if ok else "")
            self.record(next(iter(s.media.values()), ""), s.task, s.turns[-1][0], text)
            found = last_music_caption(text)  # the caption, after what the answer restates
            hits = attribute_hits(found[1] if found else text,
                                  _music_attrs(self.truth(s.output_music)), self.vocab)
            for attr, hit in [*hits.items(), ("combination", all(hits.values()))]:
                named.setdefault(attr, []).append(hit)
            if s.music_caption.lower() in s.turns[-1][0].lower():
                worded += 1  # the request spells out its answer: not a test of the projector
                continue
            preds.append(self.projected(prompt + out, item) if ok else None)
            targets.append(self.truth(s.output_music))
            templates.append(music_template_of(text))
        return {"rate": float(np.mean(ends)) if ends else float("nan"), "n": len(ends),
                "skipped_containing_caption": worded,
                "named": {a: float(np.mean(v)) for a, v in named.items()},
                **self.projector_scores(preds, targets, templates)}

    @torch.no_grad()
    def projected(self, ids: list[int], item: dict[str, Any]) -> torch.Tensor:
        """Projector output (tokens, width) for one generated sequence ending in [AUD0..7]."""
        model = self.model
        groups = {m: ([0], model.encode_media(m, [self.media.item_features(m, x)]))
                  for m, x in item.items()}
        feats = model.modality_features(groups, 1)
        hidden = model.projector_hidden(torch.tensor([ids]), feats)
        pos = torch.arange(len(ids) - 8, len(ids))[None]
        return model.project_music(hidden, pos)[0].float().cpu()

    def projector_scores(self, preds: list[Optional[torch.Tensor]], combos: list[dict[str, str]],
                         templates: Optional[list[Optional[int]]] = None) -> dict[str, Any]:
        """Cosine to the true combination's description (0 where no [AUD] tokens were
        generated); over the answers that were projected only (`cosine_routed`), the same for
        other requests' combinations (`cosine_shuffled`) and nearest-description retrieval.
        `templates[i]`: the caption template the i-th answer used (None: best of all)."""
        templates = templates or [None] * len(preds)
        have = [i for i, p in enumerate(preds) if p is not None]
        out: dict[str, Any] = {"n_projected": len(have), "cosine_shuffled": float("nan"),
                               "cosine_routed": float("nan"), "retrieval": float("nan")}
        if not preds:
            return {**out, "cosine": float("nan")}
        matched = np.zeros(len(preds))
        if have:
            space = music_space()
            sim = self._description_cosines(torch.stack([preds[i] for i in have]), space,
                                            [templates[i] for i in have])
            truth = np.array([space.index(_music_attrs(combos[i])) for i in have])
            rows = np.arange(len(have))
            matched[have] = sim[rows, truth]
            other = truth[None, :] != truth[:, None]  # (request, other request)
            shuffled = [sim[r, truth[other[r]]].mean() for r in rows if other[r].any()]
            out["cosine_shuffled"] = float(np.mean(shuffled)) if shuffled else float("nan")
            out["cosine_routed"] = float(matched[have].mean())  # the baseline's answers
            out["retrieval"] = float((sim.argmax(1) == truth).mean())
        return {**out, "cosine": float(matched.mean())}

    def _description_cosines(self, preds: torch.Tensor, space: list[dict[str, str]],
                             templates: list[Optional[int]]) -> np.ndarray:
        """(n, len(space)): per prediction and combination, the cosine to that combination in the
        prediction's template (or the max over templates when it has none)."""
        model = self.model
        captions = [c for attrs in space for c in music_captions(attrs)]
        target = model.decoder.targets(captions, scale=model.cfg.projector.target_scale).float()
        p = torch.nn.functional.normalize(preds.float().flatten(1), dim=1)
        t = torch.nn.functional.normalize(target.flatten(1), dim=1)
        sim = (p @ t.T).reshape(len(preds), len(space), -1).numpy()
        return np.stack([row.max(-1) if k is None else row[:, k]
                         for row, k in zip(sim, templates)])

    def run(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        for task in CAPTION_TASKS:
            details[task] = self.captioning(task)
        details["audio_caption_silenced"] = self.captioning("audio_caption", silence=True)
        details["projector_cosine_teacher_forced"] = self.projector_teacher_forced()
        details["qa"] = self.music_qa()
        details["music_requests"] = self.music_requests()
        details["understanding_requests"] = self.understanding_requests()
        details["text_requests"] = self.text_requests()
        return {
            "audio_caption": details["audio_caption"]["accuracy"],
            "audio_caption_silenced": details["audio_caption_silenced"]["accuracy"],
            "image_caption": details["image_caption"]["accuracy"],
            "video_caption": details["video_caption"]["accuracy"],
            "projector_cosine": details["music_requests"]["cosine"],
            "projector_cosine_routed": details["music_requests"]["cosine_routed"],
            "projector_cosine_shuffled": details["music_requests"]["cosine_shuffled"],
            "qa": details["qa"]["accuracy"],
            "aud_tokens_on_music_requests": details["music_requests"]["rate"],
            "aud_tokens_on_questions": details["qa"]["aud_rate"],
            "aud_tokens_on_unseen_understanding": details["understanding_requests"]["aud_rate"],
            "aud_tokens_on_text_requests": details["text_requests"]["rate"],
            "details": details,
        }


def load_evaluated_model(checkpoint: str, feature_cache: Optional[str], dtype: str = "float32",
                         quantize: str = "none") -> LoadedModel:
    """The trained checkpoint through the serving layer (one-line errors, one media front end),
    on CPU (float32 by default, so the numbers do not depend on the machine; --dtype/--quantize
    measure what half precision and int8 cost in learning metrics)."""
    if not Path(checkpoint).is_dir():
        raise InputError(f"--model {checkpoint}: no such checkpoint folder")
    choice = ModelChoice(checkpoint, preset="tiny", device="cpu", dtype=dtype, quantize=quantize,
                         feature_cache=feature_cache)
    return load_model(choice)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="trained output folder (e.g. OUT/stage3)")
    p.add_argument("--data_root", required=True)
    p.add_argument("--predictions", default=None, help="write one JSON line per held-out item")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=48)
    p.add_argument("--feature_cache", default=None, help="frozen-encoder feature cache folder")
    p.add_argument("--output", default=None, help="also write the JSON result to this file")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="backbone dtype (default float32: numbers independent of the machine)")
    p.add_argument("--quantize", default="none", choices=("none", "int8"),
                   help="int8: weight-only int8 backbone projections (llama.quantize)")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    problem = missing_ground_truth(root)
    if problem:
        print(f"Evaluation.synthetic: {problem}", file=sys.stderr)
        return 2
    try:
        engine = load_evaluated_model(args.model, args.feature_cache, args.dtype, args.quantize)
    except bad_input_errors() as err:
        return fail("Evaluation.synthetic", err)
    ev = Evaluator(engine.model, root, args.batch_size, args.max_new_tokens, media=engine.features)
    result = ev.run()
    if args.predictions:
        write_text(args.predictions, "".join(json.dumps(row) + "\n" for row in ev.predictions))
    text = json.dumps(result, indent=2)
    if args.output:
        write_text(args.output, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
