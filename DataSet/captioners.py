"""Captioners for music, images and video, batched, with the published prompts.

- music: one of our checkpoints in captioning mode through the serving layer `app` (model
  choice and loading, media features), batched at the generation level: the prompts of a batch
  are decoded together by `llama.generation.generate` with their media vectors.
- image: BLIP (`BlipForConditionalGeneration`, conditional prompt "the image shows", beam 4,
  max length 100, as published) or LLaVA-NeXT (`LlavaNextForConditionalGeneration`, chat prompt).
- video: TimeSformer-GPT2 (`VisionEncoderDecoderModel`; the encoder's frame count, beam 8,
  length 20..200, as published) or Video-LLaVA (`VideoLlavaForConditionalGeneration`).
The family is read from the model's config (`model_type`); models load from hub ids (offline by
default: from the local cache) or local folders, on `--device` in `--dtype`. Video-LLaVA's
processor needs transformers' video processor, which needs torchvision: it runs where torchvision
is installed (not in this project's CPU environment, where TimeSformer-GPT2 is the video captioner).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from data.media import load_image, load_video
from DataSet.common import (
    ItemError,
    Manifest,
    ModelInfo,
    StepReport,
    add_common_args,
    apply_offline,
    open_step,
    resolve_revision,
    run_items,
    torch_dtype,
)
from util.atomic import write_json

IMAGE_PROMPT_BLIP = "the image shows"
IMAGE_PROMPT_CHAT = "Describe the image in detail."
VIDEO_PROMPT_CHAT = "Describe the video in detail."


def run_captions(kind: str, items: Sequence[tuple[str, Any]], captioner: Any, out: Path, *,
                 settings: dict[str, Any], batch_size: int = 4, seed: int = 0,
                 restart: bool = False, retry_failed: bool = False, show_progress: bool = True
                 ) -> tuple[StepReport, dict[str, str]]:
    """Caption every (name, path); write `out` = {name: caption} (the published schema)."""
    manifest = Manifest(step=out.stem, settings=settings, models=[captioner.identity], seed=seed)
    progress = open_step(manifest, out.parent, restart=restart)

    def work(batch: Sequence[Any]) -> list[Any]:
        return [_nonempty(c) for c in captioner.caption(list(batch))]

    report = run_items(f"{kind} captions", items, work, progress, batch_size=batch_size,
                       retry_failed=retry_failed, show_progress=show_progress)
    captions = {k: progress.done[k] for k, _ in items if k in progress.done}
    write_json(out, captions)
    return report, captions


def _nonempty(c: Any) -> Any:
    if isinstance(c, str) and not c.strip():
        return ItemError("the model produced an empty caption")
    return c.strip() if isinstance(c, str) else c


# ---------------------------------------------------------------------------------------------
# Music: our checkpoints through app/


def add_music_captioner_args(p: argparse.ArgumentParser) -> None:
    from app.args import add_model_arguments

    add_model_arguments(p)  # --model/--preset/... and --device/--dtype
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--online", action="store_true")
    add_common_args(p)


class MusicCaptioner:
    """Captions audio files with an M2UGen checkpoint (any of ours), batched."""

    def __init__(self, engine: Any, question: str, *, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> None:
        self.engine = engine
        self.question = question
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        ckpt = engine.choice.checkpoint
        self.identity = ModelInfo(
            name=ckpt or f"preset:{engine.choice.preset}",
            revision=resolve_revision(ckpt) if ckpt else "random-tuned-weights",
            role="music captioner")
        self.settings = {"max_new_tokens": max_new_tokens, "temperature": temperature,
                         "top_p": top_p, "preset": engine.choice.preset}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "MusicCaptioner":
        from app.loading import choose_model, load_model

        apply_offline(args)
        engine = load_model(choose_model(args))
        return cls(engine, args.question, max_new_tokens=args.max_new_tokens,
                   temperature=args.temperature, top_p=args.top_p, seed=args.seed)

    def caption(self, paths: Sequence[Path]) -> list[Any]:
        import torch

        from app.errors import InputError
        from llama.generation import generate

        model = self.engine.model
        feats, ok, results = [], [], []
        for p in paths:
            try:
                media = self.engine.media_input({"audio": str(p)})
            except InputError as e:
                results.append(ItemError(str(e)))
                continue
            feats.append(model.media_vector(media))
            ok.append(len(results))
            results.append(None)
        if not ok:
            return results
        prompt, _ = model.build_prompt(self.question, [], self.max_new_tokens)
        gen = torch.Generator(device=model.device_).manual_seed(self.seed)
        out = generate(model.backbone, [prompt] * len(ok), self.max_new_tokens,
                       temperature=self.temperature, top_p=self.top_p,
                       eos_id=model.tokenizer.eos_id, generator=gen,
                       modality_features=torch.cat(feats, dim=0), pad_id=model.tokenizer.pad_id)
        aud = set(model.tokenizer.aud_ids)
        for i, ids in zip(ok, out):
            cut = next((j for j, t in enumerate(ids) if t in aud), len(ids))
            results[i] = model.tokenizer.decode(ids[:cut]).strip()
        return results


# ---------------------------------------------------------------------------------------------
# Images and video: transformers-native families


def _model_type(path: str, revision: str | None) -> str:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, revision=revision).model_type


class VisionCaptioner:
    """BLIP / LLaVA-NeXT for images, TimeSformer-GPT2 / Video-LLaVA for videos."""

    FAMILIES = {"image": ("blip", "llava_next"), "video": ("vision-encoder-decoder",
                                                            "video_llava")}

    def __init__(self, modality: str, path: str, *, device: str = "cpu", dtype: Any = None,
                 revision: str | None = None, prompt: str | None = None,
                 max_new_tokens: int = 60, max_length: int | None = None,
                 num_beams: int | None = None,
                 num_frames: int | None = None, image_processor: str | None = None,
                 tokenizer: str | None = None) -> None:
        import torch

        self.modality, self.device = modality, device
        self.family = _model_type(path, revision)
        if self.family not in self.FAMILIES[modality]:
            raise ValueError(f"{path}: model type {self.family!r} cannot caption {modality}; "
                             f"supported: {self.FAMILIES[modality]}")
        dtype = dtype or torch.float32
        self.max_new_tokens = max_new_tokens
        self.identity = ModelInfo(path, resolve_revision(path, revision), f"{modality} captioner")
        load = {"blip": self._load_blip, "llava_next": self._load_llava_next,
                "vision-encoder-decoder": self._load_ved, "video_llava": self._load_video_llava}
        load[self.family](path, revision, dtype, image_processor, tokenizer)
        self.model.to(device).eval()
        self.num_beams = num_beams or {"blip": 4, "vision-encoder-decoder": 8}.get(self.family, 1)
        # BLIP and TimeSformer-GPT2 bound the whole caption (published: 100 and 20..200 tokens)
        self.max_length = max_length or {"blip": 100, "vision-encoder-decoder": 200}.get(
            self.family)
        self.prompt = prompt or {"blip": IMAGE_PROMPT_BLIP, "llava_next": IMAGE_PROMPT_CHAT,
                                 "video_llava": VIDEO_PROMPT_CHAT}.get(self.family, "")
        self.num_frames = num_frames or self._default_frames()
        self.settings = {"family": self.family, "prompt": self.prompt,
                         "num_beams": self.num_beams, "max_new_tokens": max_new_tokens,
                         "max_length": self.max_length,
                         "num_frames": self.num_frames if modality == "video" else None}

    def _load_blip(self, path, revision, dtype, _ip, _tok) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.processor = BlipProcessor.from_pretrained(path, revision=revision)
        self.model = BlipForConditionalGeneration.from_pretrained(path, revision=revision,
                                                                  dtype=dtype)

    def _load_llava_next(self, path, revision, dtype, _ip, _tok) -> None:
        from transformers import AutoProcessor, LlavaNextForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(path, revision=revision)
        self.processor.tokenizer.padding_side = "left"  # batched generation continues the right
        self.model = LlavaNextForConditionalGeneration.from_pretrained(path, revision=revision,
                                                                       dtype=dtype)

    def _load_video_llava(self, path, revision, dtype, _ip, _tok) -> None:
        from transformers import VideoLlavaForConditionalGeneration, VideoLlavaProcessor

        self.processor = VideoLlavaProcessor.from_pretrained(path, revision=revision)
        self.processor.tokenizer.padding_side = "left"
        self.model = VideoLlavaForConditionalGeneration.from_pretrained(path, revision=revision,
                                                                        dtype=dtype)

    def _load_ved(self, path, revision, dtype, image_processor, tokenizer) -> None:
        """The published TimeSformer-GPT2 checkpoint ships without processor files: they come
        from its base models (MCG-NJU/videomae-base, gpt2) unless the folder holds them."""
        from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

        self.model = VisionEncoderDecoderModel.from_pretrained(path, revision=revision,
                                                               dtype=dtype)
        self.image_processor = AutoImageProcessor.from_pretrained(
            image_processor or (path if Path(path, "preprocessor_config.json").is_file()
                                else "MCG-NJU/videomae-base"))
        self.tokenizer = AutoTokenizer.from_pretrained(
            tokenizer or (path if Path(path, "tokenizer_config.json").is_file() else "gpt2"))

    def _default_frames(self) -> int:
        if self.family == "vision-encoder-decoder":
            return int(getattr(self.model.config.encoder, "num_frames", 8))
        return 8

    def _chat_text(self, token: str) -> str:
        conv = [{"role": "user", "content": [{"type": token}, {"type": "text",
                                                               "text": self.prompt}]}]
        return self.processor.apply_chat_template(conv, add_generation_prompt=True)

    def _load(self, path: Path) -> Any:
        if self.modality == "image":
            return load_image(path)
        return load_video(path, self.num_frames)

    def caption(self, paths: Sequence[Path]) -> list[Any]:
        import torch

        arrays = [self._load(p) for p in paths]  # MediaError -> the batch reruns one by one
        n = len(arrays)
        if self.family == "blip":
            inputs = self.processor(images=arrays, text=[self.prompt] * n, return_tensors="pt")
            kw: dict[str, Any] = {"max_length": self.max_length, "num_beams": self.num_beams}
        elif self.family == "vision-encoder-decoder":
            inputs = self.image_processor(list(arrays), return_tensors="pt")
            kw = {"min_length": min(20, self.max_length), "max_length": self.max_length,
                  "num_beams": self.num_beams}
            if self.tokenizer.pad_token_id is None:
                kw["pad_token_id"] = self.tokenizer.eos_token_id
        elif self.family == "llava_next":
            inputs = self.processor(images=arrays, text=[self._chat_text("image")] * n,
                                    return_tensors="pt", padding=True)
            kw = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}
        else:
            inputs = self.processor(videos=arrays, text=[self._chat_text("video")] * n,
                                    return_tensors="pt", padding=True)
            kw = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model.generate(**inputs, **kw)
        if self.family in ("llava_next", "video_llava"):
            out = out[:, inputs["input_ids"].shape[1]:]  # the answer only
        decode = (self.tokenizer if self.family == "vision-encoder-decoder"
                  else self.processor).batch_decode
        texts = decode(out, skip_special_tokens=True)
        if self.family == "blip":  # BLIP repeats the conditional prompt: keep it (a sentence)
            texts = [t.strip() for t in texts]
        return texts


def add_vision_captioner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="hub id or local folder")
    p.add_argument("--revision", default=None)
    p.add_argument("--prompt", default=None, help="default: the published prompt")
    p.add_argument("--max_new_tokens", type=int, default=60, help="LLaVA-NeXT / Video-LLaVA")
    p.add_argument("--max_length", type=int, default=None,
                   help="BLIP / TimeSformer-GPT2 caption length (default: published 100 / 200)")
    p.add_argument("--num_beams", type=int, default=None)
    p.add_argument("--num_frames", type=int, default=None, help="video: default from the model")
    p.add_argument("--image_processor", default=None, help="TimeSformer-GPT2: processor source")
    p.add_argument("--tokenizer", default=None, help="TimeSformer-GPT2: tokenizer source")
    add_common_args(p, models=True)


def vision_captioner_from_args(modality: str, args: argparse.Namespace) -> VisionCaptioner:
    apply_offline(args)
    return VisionCaptioner(modality, args.model, device=args.device,
                           dtype=torch_dtype(args.dtype), revision=args.revision,
                           prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                           max_length=args.max_length,
                           num_beams=args.num_beams, num_frames=args.num_frames,
                           image_processor=args.image_processor, tokenizer=args.tokenizer)


def caption_folder(modality: str, args: argparse.Namespace) -> StepReport:
    """The `caption-images` / `caption-videos` step of MUImage / MUVideo."""
    from DataSet.common import list_media

    folder = Path(args.media_dir)
    items = [(str(f.relative_to(folder)), f) for f in list_media(folder, modality)]
    cap = vision_captioner_from_args(modality, args)
    report, _ = run_captions(modality, items, cap, Path(args.out), settings=cap.settings,
                             batch_size=args.batch_size, seed=args.seed, restart=args.restart,
                             retry_failed=args.retry_failed, show_progress=not args.no_progress)
    return report
