"""Music captions (MUCaps step 3, and the music side of MUImage / MUVideo).

The published captions came from MU-LLaMA (`Datasets/common/mullama.py`: `qa_bot`), run with
the captioning question below, MU-LLaMA's kNN index (cache size 100, temperature 20, weight 0.3),
sampling at temperature 0.4 with top_p 1.0 and a length bound of 8192 tokens
(`PUBLISHED_MULLAMA`). `--model` takes a MU-LLaMA release (then these are the defaults, and
`--knn_dir` must give its index unless `--cache_weight 0` is asked for), a released M2UGen /
MuMu-LLaMA file, or one of our checkpoints (greedy, 128 tokens by default: our own choice,
recorded as such). The length bound is also cut to the context (8192 tokens for MU-LLaMA), as
the published loop was. Every value that applied is written into the manifest.

No silent random weights: without `--model`, or with a model whose LLaMA or MERT is a random
`tiny` build, the step stops with one line naming `--allow_random_weights` (tests pass it).
Sampled captions are seeded per file, so the batch size does not change them (greedy ones are
decoded in batches; sampled ones one file at a time, each with its own generator).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from DataSet.common import (
    ItemError,
    ModelInfo,
    StepError,
    add_common_args,
    add_random_weights_arg,
    apply_offline,
    refuse_random,
    resolve_revision,
)
from util.hashing import stable_int

#: The published captioning question (MUCaps / MUImage / MUVideo music captions).
CAPTION_QUESTION = ("Describe the music in detail including details such as instruments used, "
                    "tempo and mood of the song")


@dataclass(frozen=True)
class CaptionSettings:
    """How captions are decoded; `source` says where the values come from."""

    temperature: float
    top_p: float
    max_new_tokens: int
    knn: Optional[dict[str, float]] = None  # cache_size / cache_t / cache_weight, or no kNN
    source: str = ""

    def override(self, **values: Any) -> "CaptionSettings":
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            given["source"] = f"{self.source} (overridden: {sorted(given)})"
        return dataclasses.replace(self, **given)


PUBLISHED_MULLAMA = CaptionSettings(
    temperature=0.4, top_p=1.0, max_new_tokens=8192,
    knn={"cache_size": 100, "cache_t": 20.0, "cache_weight": 0.3},
    source="published music captioning: MU-LLaMA qa_bot(): temperature 0.4, top_p 1.0, "
           "max_gen_len 8192, kNN cache 100 / 20.0 / 0.3")
OURS = CaptionSettings(temperature=0.0, top_p=1.0, max_new_tokens=128,
                       source="ours (M2UGen checkpoints were not used as captioners by the "
                              "published pipeline): greedy, 128 tokens")


def add_music_captioner_args(p: argparse.ArgumentParser) -> None:
    from app.args import add_model_arguments

    add_model_arguments(p)  # --model/--preset/--llama_dir/--mert_path/--knn_dir/--device/...
    p.add_argument("--max_new_tokens", type=int, default=None,
                   help="default: MU-LLaMA 8192 as published, ours 128")
    p.add_argument("--temperature", type=float, default=None,
                   help="default: MU-LLaMA 0.4 as published, ours 0 (greedy)")
    p.add_argument("--top_p", type=float, default=None, help="default: 1.0")
    p.add_argument("--cache_size", type=int, default=None,
                   help="kNN neighbours (default: MU-LLaMA 100 as published)")
    p.add_argument("--cache_t", type=float, default=None,
                   help="kNN softmax temperature (default: MU-LLaMA 20 as published)")
    p.add_argument("--cache_weight", type=float, default=None,
                   help="share of the retrieved prototypes (default: MU-LLaMA 0.3 as published; "
                        "0 = no kNN, then --knn_dir is not needed)")
    p.add_argument("--online", action="store_true")
    add_random_weights_arg(p)
    add_common_args(p)


def random_parts(engine: Any) -> list[str]:
    """The parts of a loaded model whose weights are random (tiny builds, untrained tuning)."""
    cfg = engine.model.cfg
    parts = []
    if engine.choice.checkpoint is None:
        parts.append(f"tuned weights (no --model: preset {engine.choice.preset})")
    if cfg.llama_path == "tiny":
        parts.append("LLaMA")
    if cfg.mert.path == "tiny":
        parts.append("MERT")
    return parts


def _with_knn(settings: CaptionSettings, args: argparse.Namespace, model: Any
              ) -> CaptionSettings:
    """The kNN part of the settings, attached to the model; MU-LLaMA's published captions used
    the index, so without `--knn_dir` the step stops unless `--cache_weight 0` is asked for."""
    from llama.knn import attach_knn

    knn = dict(settings.knn or {})
    given = {k: v for k in ("cache_size", "cache_t", "cache_weight")
             if (v := getattr(args, k)) is not None}
    if given:
        knn = {"cache_size": 10, "cache_t": 20.0, "cache_weight": 0.5, **knn, **given}
        settings = dataclasses.replace(settings, source=f"{settings.source} (kNN overridden: "
                                                        f"{sorted(given)})")
    if knn and knn["cache_weight"] == 0:
        return dataclasses.replace(settings, knn=None)
    if not args.knn_dir:
        if knn:
            raise StepError("the published captions mixed MU-LLaMA's kNN index into the music "
                            f"feature (cache weight {knn['cache_weight']}): pass --knn_dir "
                            "(the folder of knn.index), or --cache_weight 0 to caption without")
        return settings
    if not knn:
        knn = {"cache_size": model.cfg.knn.cache_size, "cache_t": model.cfg.knn.cache_t,
               "cache_weight": model.cfg.knn.cache_weight}
    model.cfg.knn = dataclasses.replace(model.cfg.knn, **knn)
    try:
        attach_knn(model, args.knn_dir)
    except (OSError, ValueError) as e:
        raise StepError(f"--knn_dir {args.knn_dir}: {e}") from e
    return dataclasses.replace(settings, knn={**knn, "index": str(args.knn_dir)})


class MusicCaptioner:
    """Captions audio files with a loaded model (`app`), batched when greedy."""

    def __init__(self, engine: Any, question: str, settings: CaptionSettings, *,
                 seed: int = 0, random_weights: Sequence[str] = ()) -> None:
        self.engine, self.question, self.decoding, self.seed = engine, question, settings, seed
        ckpt = engine.choice.checkpoint
        self.identity = ModelInfo(
            name=ckpt or f"preset:{engine.choice.preset}",
            revision=resolve_revision(ckpt) if ckpt else "random-tuned-weights",
            role="music captioner")
        self.settings = {"question": question, **dataclasses.asdict(settings),
                         "random_weights": list(random_weights)}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "MusicCaptioner":
        from app.loading import choose_model, load_model

        apply_offline(args)
        if args.model is None:  # never fall back silently, not even to ckpts/<preset>/stage3
            refuse_random("no --model given: the captions would come from the random tuned "
                          f"weights of preset {args.preset!r}; pass --model (a MU-LLaMA or "
                          "M2UGen checkpoint)", args.allow_random_weights)
        # kNN is attached below, with the captioning settings (not the chat defaults)
        choice = dataclasses.replace(choose_model(args), knn_dir=None)
        if args.model is None:
            choice = dataclasses.replace(choice, checkpoint=None)
        engine = load_model(choice)
        parts = random_parts(engine)
        if parts:
            refuse_random(f"{choice.checkpoint or 'the preset'}: random weights in "
                          f"{', '.join(parts)}", args.allow_random_weights)
        mu_llama = not engine.model.cfg.chat_style.music_output
        settings = (PUBLISHED_MULLAMA if mu_llama else OURS).override(
            temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
        settings = _with_knn(settings, args, engine.model)
        return cls(engine, args.question, settings, seed=args.seed, random_weights=parts)

    def caption(self, batch: Sequence[tuple[str, Path]]) -> list[Any]:
        """Captions of (key, path) items; a file that cannot be decoded fails alone."""
        results: list[Any] = [None] * len(batch)
        feats, ok = [], []
        for i, (_, path) in enumerate(batch):
            try:
                feats.append(self._vector(path))
                ok.append(i)
            except ItemError as e:
                results[i] = e
        if not ok:
            return results
        if self.decoding.temperature == 0:
            texts = self._decode(feats, None)
        else:
            texts = [self._decode([f], stable_int(f"{self.seed}:{batch[i][0]}"))[0]
                     for i, f in zip(ok, feats)]
        for i, text in zip(ok, texts):
            results[i] = text
        return results

    def _vector(self, path: Path) -> Any:
        from app.errors import InputError

        try:
            media = self.engine.media_input({"audio": str(path)})
        except InputError as e:
            raise ItemError(str(e)) from e
        return self.engine.model.media_vector(media)

    def _decode(self, feats: list[Any], seed: Optional[int]) -> list[str]:
        """Captions for feature vectors: greedy ones batched, sampled ones one by one with
        their own generator. The model's chat style decides the prompt and where it ends."""
        import torch

        from llama.chat import answer_ids
        from llama.generation import generate

        model = self.engine.model
        style, tok = model.cfg.chat_style, model.tokenizer
        prompt, _ = model.build_prompt(self.question, [], 1)
        # the published loop ran to max_gen_len or to the end of the context, whichever first
        n = min(self.decoding.max_new_tokens,
                model.cfg.llama.max_seq_len - len(prompt) - len(tok.aud_ids))
        plain = not style.stop.strings and style.stop.aud != "after_run"
        if seed is None and plain:
            out = generate(model.backbone, [prompt] * len(feats), n, eos_id=(
                tok.eos_id if style.stop.eos else ()), modality_features=torch.cat(feats, dim=0),
                pad_id=tok.pad_id)
        else:
            gen = None
            if seed is not None:
                gen = torch.Generator(device=model.device_).manual_seed(seed % 2**63)
            out = [answer_ids(model, prompt, f, n, self.decoding.temperature,
                              self.decoding.top_p, gen) for f in feats]
        ends = set(tok.aud_ids) | ({tok.eos_id} if style.stop.eos else set())
        texts = []
        for ids in out:
            cut = next((j for j, t in enumerate(ids) if t in ends), len(ids))
            texts.append(style.answer_text(tok.decode(ids[:cut])))
        return texts
