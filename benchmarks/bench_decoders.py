"""Decoder speed: MusicGen guidance batched vs two passes; AudioLDM2 DDIM-200 vs the fast scheduler.

MusicGen: classifier-free guidance needs conditional and unconditional logits every step. Our
`MusicGenDecoder.synthesize` stacks both into one batch (one decoder pass per step); the
alternative runs the unconditional branch as a second pass with its own KV cache (implemented
here as a logits processor, used only for this comparison). Both produce the same codes (checked
greedily). AudioLDM2: seconds per clip with the published 200 DDIM steps vs DPM-Solver++
multistep at its default step count.

Random weights (no checkpoints here): `--musicgen tiny` is the tiny preset; `--musicgen mid`
(default) keeps its T5/EnCodec and widens the MusicGen decoder to 512 x 6 layers so the
transformer dominates like in the real model. AudioLDM2 uses the tiny preset pipeline.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_decoders.py [--musicgen mid|tiny]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llama.config import get_preset  # noqa: E402
from llama.decoders import (  # noqa: E402
    SCHEDULER_DEFAULT_STEPS,
    AudioLDM2Decoder,
    MusicGenDecoder,
    build_tiny_musicgen,
    infer_padding_mask,
    load_decoder,
)

MID_DECODER = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, ffn_dim=2048)
CAPTION = "a slow piano melody with soft strings"


class SecondPassGuidance:
    """Logits processor: unconditional logits from a separate decoder pass (own KV cache)."""

    def __init__(self, model, states, mask, guidance: float, max_length: int) -> None:
        self.model, self.guidance = model, guidance
        self.states, self.mask = torch.zeros_like(states), torch.zeros_like(mask)
        start = model.generation_config.decoder_start_token_id
        rows = states.shape[0] * model.decoder.num_codebooks
        _, self.delay_mask = model.decoder.build_delay_pattern_mask(
            torch.full((rows, 1), start, dtype=torch.long), pad_token_id=start,
            max_length=max_length,
        )
        self.past = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ids = self.model.decoder.apply_delay_pattern_mask(input_ids, self.delay_mask)
        out = self.model(
            encoder_outputs=(self.states,), attention_mask=self.mask,
            decoder_input_ids=ids if self.past is None else ids[:, -1:],
            past_key_values=self.past, use_cache=True,
        )
        self.past = out.past_key_values
        uncond = out.logits[:, -1, :].to(scores.dtype)
        return uncond + (scores - uncond) * self.guidance


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def musicgen_rows(size: str, seconds: float, batch: int, repeats: int) -> list[tuple[str, ...]]:
    from transformers import LogitsProcessorList
    from transformers.modeling_outputs import BaseModelOutput

    cfg = get_preset("tiny").decoder
    if size == "mid":
        model, tokenizer = build_tiny_musicgen(cfg.max_text_tokens, **MID_DECODER)
        decoder = MusicGenDecoder(cfg, model, tokenizer, torch.device("cpu"), torch.float32)
    else:
        decoder = load_decoder(cfg)
    model = decoder.model
    cond = decoder.targets([CAPTION] * batch) / 10
    mask = infer_padding_mask(cond, cfg.pad_norm_threshold)
    frames = round(seconds * decoder.frames_per_second)
    new_tokens = frames + model.decoder.num_codebooks - 1
    g = 3.5

    def batched(sample: bool = True):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return model.generate(
                inputs=torch.zeros(batch, 1, dtype=torch.long),
                encoder_outputs=BaseModelOutput(
                    last_hidden_state=torch.cat([cond, torch.zeros_like(cond)])
                ),
                attention_mask=torch.cat([mask, torch.zeros_like(mask)]), guidance_scale=g,
                max_new_tokens=new_tokens, do_sample=sample,
            )

    def two_pass(sample: bool = True):
        proc = SecondPassGuidance(model, cond, mask, g, max_length=new_tokens + 1)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return model.generate(
                inputs=torch.zeros(batch, 1, dtype=torch.long),
                encoder_outputs=BaseModelOutput(last_hidden_state=cond), attention_mask=mask,
                guidance_scale=1.0, logits_processor=LogitsProcessorList([proc]),
                max_new_tokens=new_tokens, do_sample=sample,
            )

    same = torch.allclose(batched(False), two_pass(False), atol=1e-5)
    t_batched, _ = _timed(batched, repeats)
    t_two, _ = _timed(two_pass, repeats)
    n = frames * batch
    dec = model.config.decoder
    label = (f"MusicGen {size} (decoder {dec.hidden_size}x{dec.num_hidden_layers}), "
             f"B={batch}, {seconds:g}s, g={g}")
    return [
        (label, "guidance batched (ours)", f"{t_batched:.2f} s", f"{n / t_batched:.1f} frames/s"),
        (label, "guidance two passes", f"{t_two:.2f} s", f"{n / t_two:.1f} frames/s"),
        (label, "speed-up / same greedy audio", f"x{t_two / t_batched:.2f}", str(same)),
    ]


def audioldm2_rows(seconds: float, repeats: int) -> list[tuple[str, ...]]:
    cfg = dataclasses.replace(get_preset("tiny-audioldm2").decoder, num_waveforms_per_prompt=1)
    decoder: AudioLDM2Decoder = load_decoder(cfg)
    cond = decoder.targets([CAPTION])
    rows = []
    for name, steps in (("ddim", 200), ("dpm-multistep", SCHEDULER_DEFAULT_STEPS["dpm-multistep"])):
        def run(name=name, steps=steps):
            return decoder.synthesize(cond, seconds=seconds, scheduler=name,
                                      num_inference_steps=steps, guidance_scale=3.5)

        t, _ = _timed(run, repeats)
        rows.append((f"AudioLDM2 tiny, {seconds:g}s clip, g=3.5", f"{name} {steps} steps",
                     f"{t:.2f} s/clip", f"{steps / t:.1f} steps/s"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--musicgen", choices=["tiny", "mid"], default="mid")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = musicgen_rows(args.musicgen, args.seconds, args.batch, args.repeats)
    rows += audioldm2_rows(args.seconds, max(1, args.repeats - 1))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"torch threads: {args.threads}; median of {args.repeats} runs "
          f"(AudioLDM2: {max(1, args.repeats - 1)})")
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
