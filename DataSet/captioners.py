"""Image and video captioners (batched, resumable) and the caption step shared with music.

- image: BLIP (`BlipForConditionalGeneration`, conditional prompt "the image shows", as the
  published v1 ran it) or LLaVA-NeXT (`LlavaNextForConditionalGeneration`, the published v2's
  music-oriented prompt, sampled at temperature 0.2, re-captioned until one paragraph).
- video: TimeSformer-GPT2 (`VisionEncoderDecoderModel`; the encoder's frame count, beam 8,
  length 20..200, as published) or Video-LLaVA (`VideoLlavaForConditionalGeneration`, the
  published v2 prompt at temperature 0.1).
Defaults are what the published scripts PASSED to `generate` (`FAMILIES`, with their source),
and the manifest records the settings that really applied. The family is read from the model's
config (`model_type`); models load from hub ids (offline by default: from the local cache) or
local folders, on `--device` in `--dtype`; a folder that lacks weights (which transformers would
initialise randomly) is refused unless `--allow_random_weights`. Sampled captions are seeded per
file (`DataSet.sampling`): the batch size does not change them. Video-LLaVA's processor needs
transformers' video processor, which needs torchvision: it runs where torchvision is installed
(not in this project's CPU environment, where TimeSformer-GPT2 is the video captioner).
Music captions: `DataSet.music_captioner`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from data.media import load_image, load_video
from DataSet.common import (
    ItemError,
    Manifest,
    ModelInfo,
    StepReport,
    add_common_args,
    apply_offline,
    check_loaded,
    open_step,
    resolve_revision,
    run_items,
    torch_dtype,
)
from DataSet.sampling import Sampling, generate_kwargs
from util.atomic import write_json

IMAGE_PROMPT_BLIP = "the image shows"


def run_captions(kind: str, items: Sequence[tuple[str, Any]], captioner: Any, out: Path, *,
                 settings: dict[str, Any], batch_size: int = 4, seed: int = 0,
                 restart: bool = False, retry_failed: bool = False, show_progress: bool = True
                 ) -> tuple[StepReport, dict[str, str]]:
    """Caption every (name, path); write `out` = {name: caption} (the published schema). The
    captioner gets (name, path) pairs: the name seeds its sampling."""
    manifest = Manifest(step=out.stem, settings=settings, models=[captioner.identity], seed=seed)
    progress = open_step(manifest, out.parent, restart=restart)

    def work(batch: Sequence[Any]) -> list[Any]:
        return [_nonempty(c) for c in captioner.caption(list(batch))]

    report = run_items(f"{kind} captions", [(k, (k, p)) for k, p in items], work, progress,
                       batch_size=batch_size, retry_failed=retry_failed,
                       show_progress=show_progress)
    captions = {k: progress.done[k] for k, _ in items if k in progress.done}
    write_json(out, captions)
    return report, captions


def _nonempty(c: Any) -> Any:
    if isinstance(c, str) and not c.strip():
        return ItemError("the model produced an empty caption")
    return c.strip() if isinstance(c, str) else c


# ---------------------------------------------------------------------------------------------
# Images and video: transformers-native families

#: The music-oriented image prompt the published v2 sent to LLaVA-v1.6-34b
#: (MuMu-LLaMA DataSet/MUImage/llava_caption.py).
IMAGE_PROMPT_MUSIC = (
    "Describe the image within one sentence following these instructions:\n"
    "1.Recognize all the instruments that appear in this image.\n"
    "2.Detect all of other elements which may contribute to the music effect.\n"
    "3.Other elements may include Facial Expression and Body Language, Mood, Atmosphere, "
    "and Lighting, Environment, Clothing, Color Scheme and Composition, Audience Interaction, "
    "Symbolism.\n"
    "4.Combine all the elements above and highlight the instruments into the sentence.\n"
    "5.Final output should be limited to 150 words, formatted as a single paragraph, expressed "
    "in one to three sentences.")
#: The video prompt the published v2 sent to Video-LLaVA-7B (MuMu-LLaMA DataSet/MUVideo/
#: videollava_caption.py), verbatim: it wrapped its text in Mistral's [INST] markers inside
#: Video-LLaVA's own conversation template, and that is what the model saw.
VIDEO_PROMPT_MUSIC = (
    "[INST] Describe the video within one sentence following these instructions:\n"
    "1.Recognize all the dynamic changes influences music tempo and intensity.\n"
    "2.Analyze how storyline progression and scene transitions dictate music mood and "
    "atmosphere.\n"
    "3.Examine how visual cues like beat changes and scene transitions guide music rhythm and "
    "arrangement.\n"
    "4.Combine all above, and finally output should be limited to 150 words, formatted as a "
    "single paragraph, expressed in one to three sentences. [/INST]")


@dataclass(frozen=True)
class FamilyDefaults:
    """What the published script of a captioner family passed to `generate` (what RAN)."""

    prompt: str
    sampling: Optional[Sampling]  # chat families; None: the fields below
    num_beams: Optional[int] = None  # None: the model's own generation config decides
    max_length: Optional[int] = None
    min_length: Optional[int] = None
    one_paragraph: bool = False  # re-caption until one line ending with "." (published check)
    source: str = ""


FAMILIES: dict[str, FamilyDefaults] = {
    "blip": FamilyDefaults(
        IMAGE_PROMPT_BLIP, None, source="published M2UGen v1 MUImage/03_caption_image.py: "
        "`generate(**inputs)`; the beam 4 / max length 100 it defined were never passed, so "
        "the model's own generation config decided (greedy, 20 tokens in total)"),
    "vision-encoder-decoder": FamilyDefaults(
        "", None, num_beams=8, max_length=200, min_length=20,
        source="published M2UGen v1 MUVideo/03_caption_video.py (passed to generate)"),
    "llava_next": FamilyDefaults(
        IMAGE_PROMPT_MUSIC, Sampling(temperature=0.2, top_p=1.0, max_new_tokens=256,
                                     source="published MuMu-LLaMA MUImage/llava_caption.py"),
        one_paragraph=True, source="published MuMu-LLaMA MUImage/llava_caption.py + "
        "merge_check.py (llava-v1.6-34b)"),
    "video_llava": FamilyDefaults(
        VIDEO_PROMPT_MUSIC, Sampling(temperature=0.1, top_p=1.0, max_new_tokens=1024,
                                     source="published MuMu-LLaMA MUVideo/videollava_caption.py"),
        source="published MuMu-LLaMA MUVideo/videollava_caption.py (Video-LLaVA-7B)"),
}


def one_paragraph(text: str) -> Optional[str]:
    """The published image-caption check: one line that ends with a full stop."""
    if "\n" in text.strip():
        return "caption spans several lines"
    if not text.strip().endswith("."):
        return "caption does not end with a full stop"
    return None


def _model_type(path: str, revision: str | None) -> str:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, revision=revision).model_type


class VisionCaptioner:
    """BLIP / LLaVA-NeXT for images, TimeSformer-GPT2 / Video-LLaVA for videos."""

    FAMILIES = {"image": ("blip", "llava_next"), "video": ("vision-encoder-decoder",
                                                            "video_llava")}

    def __init__(self, modality: str, path: str, *, device: str = "cpu", dtype: Any = None,
                 revision: str | None = None, prompt: str | None = None,
                 max_new_tokens: int | None = None, max_length: int | None = None,
                 num_beams: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, num_frames: int | None = None,
                 image_processor: str | None = None, tokenizer: str | None = None,
                 retries: int = 3, seed: int = 0, allow_random_weights: bool = False) -> None:
        import torch

        self.modality, self.device, self.seed, self.retries = modality, device, seed, retries
        self.family = _model_type(path, revision)
        if self.family not in self.FAMILIES[modality]:
            raise ValueError(f"{path}: model type {self.family!r} cannot caption {modality}; "
                             f"supported: {self.FAMILIES[modality]}")
        d = FAMILIES[self.family]
        self.identity = ModelInfo(path, resolve_revision(path, revision), f"{modality} captioner")
        load = {"blip": self._load_blip, "llava_next": self._load_llava_next,
                "vision-encoder-decoder": self._load_ved, "video_llava": self._load_video_llava}
        info = load[self.family](path, revision, dtype or torch.float32, image_processor,
                                 tokenizer)
        check_loaded(path, info, allow_random_weights)
        self.model.to(device).eval()
        self.prompt = d.prompt if prompt is None else prompt
        self.sampling = d.sampling.override(temperature=temperature, top_p=top_p,
                                            max_new_tokens=max_new_tokens) if d.sampling else None
        self.num_beams = num_beams if num_beams is not None else d.num_beams
        self.max_length = max_length if max_length is not None else d.max_length
        self.min_length = None if d.min_length is None else min(d.min_length,
                                                                self.max_length or d.min_length)
        self.one_paragraph = d.one_paragraph
        self.num_frames = num_frames or self._default_frames()
        given = {k: v for k, v in {"prompt": prompt, "max_new_tokens": max_new_tokens,
                                   "max_length": max_length, "num_beams": num_beams,
                                   "temperature": temperature, "top_p": top_p}.items()
                 if v is not None}
        self.settings = {"family": self.family, "prompt": self.prompt, "source": d.source,
                         "overridden": sorted(given), "generate": self._effective(),
                         "one_paragraph_check": self.one_paragraph, "retries": retries,
                         "num_frames": self.num_frames if modality == "video" else None}

    def _effective(self) -> dict[str, Any]:
        """The generation settings that really apply (the manifest's record of them)."""
        if self.sampling is not None:
            return {**self.sampling.as_dict(), "num_beams": 1}
        out = self._generate_kwargs()
        if self.family == "blip":
            out["from_model_generation_config"] = sorted(
                {"num_beams", "max_length"} - {k for k in ("num_beams", "max_length")
                                               if getattr(self, k) is not None})
        return out

    def _generate_kwargs(self) -> dict[str, Any]:
        num_beams, max_length = self.num_beams, self.max_length
        if self.family == "blip":
            # What the published call `generate(**inputs)` got: the model's generation config,
            # whose unset values were transformers 4.x's defaults then (greedy, max_length 20
            # tokens in all, the prompt's included). transformers 5 would count 20 NEW tokens,
            # so the values are passed explicitly.
            gc = self.model.text_decoder.generation_config
            num_beams = num_beams if num_beams is not None else (gc.num_beams or 1)
            max_length = max_length if max_length is not None else (gc.max_length or 20)
        kw = {"num_beams": num_beams, "max_length": max_length, "min_length": self.min_length}
        if self.family == "blip":
            kw["do_sample"] = False
        return {k: v for k, v in kw.items() if v is not None}

    def _load_blip(self, path, revision, dtype, _ip, _tok) -> dict:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.processor = BlipProcessor.from_pretrained(path, revision=revision)
        self.model, info = BlipForConditionalGeneration.from_pretrained(
            path, revision=revision, dtype=dtype, output_loading_info=True)
        return info

    def _load_llava_next(self, path, revision, dtype, _ip, _tok) -> dict:
        from transformers import AutoProcessor, LlavaNextForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(path, revision=revision)
        self.processor.tokenizer.padding_side = "left"  # batched generation continues the right
        self.model, info = LlavaNextForConditionalGeneration.from_pretrained(
            path, revision=revision, dtype=dtype, output_loading_info=True)
        return info

    def _load_video_llava(self, path, revision, dtype, _ip, _tok) -> dict:
        from transformers import VideoLlavaForConditionalGeneration, VideoLlavaProcessor

        self.processor = VideoLlavaProcessor.from_pretrained(path, revision=revision)
        self.processor.tokenizer.padding_side = "left"
        self.model, info = VideoLlavaForConditionalGeneration.from_pretrained(
            path, revision=revision, dtype=dtype, output_loading_info=True)
        return info

    def _load_ved(self, path, revision, dtype, image_processor, tokenizer) -> dict:
        """The published TimeSformer-GPT2 checkpoint ships without processor files: they come
        from its base models (MCG-NJU/videomae-base, gpt2) unless the folder holds them."""
        from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

        self.model, info = VisionEncoderDecoderModel.from_pretrained(
            path, revision=revision, dtype=dtype, output_loading_info=True)
        self.image_processor = AutoImageProcessor.from_pretrained(
            image_processor or (path if Path(path, "preprocessor_config.json").is_file()
                                else "MCG-NJU/videomae-base"))
        self.tokenizer = AutoTokenizer.from_pretrained(
            tokenizer or (path if Path(path, "tokenizer_config.json").is_file() else "gpt2"))
        return info

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

    def caption(self, batch: Sequence[tuple[str, Path]]) -> list[Any]:
        """Captions of (key, path) items; chat families retry failed checks per item."""
        arrays = [self._load(p) for _, p in batch]  # MediaError -> the batch reruns one by one
        keys = [k for k, _ in batch]
        if self.sampling is None:
            return self._generate(arrays, keys, 0)
        results: list[Any] = [None] * len(batch)
        reasons: dict[int, list[str]] = {i: [] for i in range(len(batch))}
        pending = list(range(len(batch)))
        for attempt in range(self.retries + 1):
            texts = self._generate([arrays[i] for i in pending], [keys[i] for i in pending],
                                   attempt)
            still = []
            for i, text in zip(pending, texts):
                why = one_paragraph(text) if self.one_paragraph else None
                if why is None:
                    results[i] = text
                else:
                    reasons[i].append(f"{why}: {text[:60]!r}")
                    still.append(i)
            pending = still
            if not pending:
                break
        for i in pending:
            results[i] = ItemError(f"{self.retries + 1} captions rejected: "
                                   + "; ".join(reasons[i]))
        return results

    def _generate(self, arrays: Sequence[Any], keys: Sequence[str], attempt: int) -> list[str]:
        import torch

        n = len(arrays)
        if self.family == "blip":
            inputs = self.processor(images=arrays, text=[self.prompt] * n, return_tensors="pt")
        elif self.family == "vision-encoder-decoder":
            inputs = self.image_processor(list(arrays), return_tensors="pt")
            if self.tokenizer.pad_token_id is None:
                self.model.generation_config.pad_token_id = self.tokenizer.eos_token_id
        elif self.family == "llava_next":
            inputs = self.processor(images=arrays, text=[self._chat_text("image")] * n,
                                    return_tensors="pt", padding=True)
        else:
            inputs = self.processor(videos=arrays, text=[self._chat_text("video")] * n,
                                    return_tensors="pt", padding=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if self.sampling is None:
            kw = self._generate_kwargs()
        else:
            kw = generate_kwargs(self.model, self.sampling, [f"{k}#{attempt}" for k in keys],
                                 inputs["input_ids"].shape[1], self.seed,
                                 pad_token_id=self.processor.tokenizer.pad_token_id)
        with torch.no_grad():
            out = self.model.generate(**inputs, **kw)
        if self.family in ("llava_next", "video_llava"):
            out = out[:, inputs["input_ids"].shape[1]:]  # the answer only
        decode = (self.tokenizer if self.family == "vision-encoder-decoder"
                  else self.processor).batch_decode
        # BLIP repeats its conditional prompt ("the image shows ..."): kept, it is a sentence
        return [t.strip() for t in decode(out, skip_special_tokens=True)]


def add_vision_captioner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="hub id or local folder")
    p.add_argument("--revision", default=None)
    p.add_argument("--prompt", default=None, help="default: the published prompt")
    p.add_argument("--max_new_tokens", type=int, default=None,
                   help="LLaVA-NeXT / Video-LLaVA (default: published 256 / 1024)")
    p.add_argument("--temperature", type=float, default=None,
                   help="LLaVA-NeXT / Video-LLaVA (default: published 0.2 / 0.1; 0 = greedy)")
    p.add_argument("--top_p", type=float, default=None)
    p.add_argument("--max_length", type=int, default=None,
                   help="BLIP / TimeSformer-GPT2 caption length (default: what the published "
                        "scripts ran: BLIP's own generation config, TimeSformer-GPT2 200)")
    p.add_argument("--num_beams", type=int, default=None,
                   help="BLIP / TimeSformer-GPT2 (default: BLIP's own config, TimeSformer 8)")
    p.add_argument("--retries", type=int, default=3,
                   help="LLaVA-NeXT: new samples for a caption that is not one paragraph")
    p.add_argument("--num_frames", type=int, default=None, help="video: default from the model")
    p.add_argument("--image_processor", default=None, help="TimeSformer-GPT2: processor source")
    p.add_argument("--tokenizer", default=None, help="TimeSformer-GPT2: tokenizer source")
    add_common_args(p, models=True)


def vision_captioner_from_args(modality: str, args: argparse.Namespace) -> VisionCaptioner:
    apply_offline(args)
    return VisionCaptioner(modality, args.model, device=args.device,
                           dtype=torch_dtype(args.dtype), revision=args.revision,
                           prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                           max_length=args.max_length, num_beams=args.num_beams,
                           temperature=args.temperature, top_p=args.top_p,
                           num_frames=args.num_frames, image_processor=args.image_processor,
                           tokenizer=args.tokenizer, retries=args.retries, seed=args.seed,
                           allow_random_weights=args.allow_random_weights)


def caption_folder(modality: str, args: argparse.Namespace) -> StepReport:
    """The `caption` step of MUImage / MUVideo."""
    from DataSet.common import list_media

    folder = Path(args.media_dir)
    items = [(str(f.relative_to(folder)), f) for f in list_media(folder, modality)]
    cap = vision_captioner_from_args(modality, args)
    report, _ = run_captions(modality, items, cap, Path(args.out), settings=cap.settings,
                             batch_size=args.batch_size, seed=args.seed, restart=args.restart,
                             retry_failed=args.retry_failed, show_progress=not args.no_progress)
    return report
