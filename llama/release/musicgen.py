"""The released MusicGen, rebuilt from the weights inside a release file (docs/MODEL.md section 8).

The published trainer saved its whole model, the frozen MusicGen included, as `generation_model.*`
under transformers' parameter names. So a release file needs no 2-6 GB MusicGen download: the
configuration is the published one for the size the tensors show (small, medium or large: T5-base
text encoder, 32 kHz EnCodec, and the decoder widths of the MusicGen conversion), or the one in a
config-only `--music_decoder_path` folder; the weights come from the file, memory-mapped.

The file holds no T5 tokenizer. It is needed only for the text route (the published demo makes
music from the answer text; training targets), and is looked up, without network unless the hub
is allowed, from the config folder, the decoder named in the file's args or `facebook/musicgen-*`
(a 2 MB download). Without one, that route fails with one line naming where it looked.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch

from llama.decoders.musicgen import has_tokenizer_files
from llama.release.components import fill_component
from llama.release.infer import count_indexed
from llama.release.keymap import COMPONENTS
from llama.release.read import ReleaseFileError

log = logging.getLogger(__name__)

PREFIX = next(p for p, part in COMPONENTS.items() if part == "musicgen")  # generation_model.
_DECODER_LAYER = "^" + re.escape(PREFIX) + r"decoder\.model\.decoder\.layers\.(\d+)\."
_EMBED = PREFIX + "decoder.model.decoder.embed_tokens.0.weight"
# (decoder width, layers) -> (published size, attention heads): the MusicGen conversion's table.
PUBLISHED_SIZES: dict[tuple[int, int], tuple[str, int]] = {
    (1024, 24): ("small", 16),
    (1536, 48): ("medium", 24),
    (2048, 48): ("large", 32),
}
# t5-base, the text encoder of every published MusicGen.
T5_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
               relative_attention_num_buckets=32, relative_attention_max_distance=128,
               feed_forward_proj="relu", layer_norm_epsilon=1e-6)
# facebook/encodec_32khz: 4 codebooks of 2048 at 50 frames/s (the other fields are the defaults).
ENCODEC_32KHZ = dict(sampling_rate=32000, audio_channels=1, upsampling_ratios=[8, 5, 4, 4],
                     target_bandwidths=[2.2], num_filters=64, codebook_size=2048,
                     use_causal_conv=False, normalize=False, use_conv_shortcut=False)


def published_musicgen_config(state: Mapping[str, torch.Tensor], path: str):
    """The MusicgenConfig of the published size whose decoder shape the file's tensors show."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    shape = decoder_shape(state)
    if shape is None:
        raise ReleaseFileError(f"{path}: {PREFIX}* has no {_EMBED[len(PREFIX):]}; give "
                                       "--music_decoder_path (a MusicGen folder or hub id)")
    width, layers = shape
    if shape not in PUBLISHED_SIZES:
        known = ", ".join(f"{n} ({w} x {n_l})" for (w, n_l), (n, _) in PUBLISHED_SIZES.items())
        raise ReleaseFileError(
            f"{path}: {PREFIX}* is a MusicGen decoder of width {width} with {layers} layers, not "
            f"a published size ({known}); give --music_decoder_path with its config")
    _, heads = PUBLISHED_SIZES[(width, layers)]
    decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=width, num_hidden_layers=layers,
                                    num_attention_heads=heads, ffn_dim=4 * width,
                                    num_codebooks=4, max_position_embeddings=2048,
                                    pad_token_id=2048, bos_token_id=2048)
    return MusicgenConfig(text_encoder=T5Config(**T5_BASE),
                          audio_encoder=EncodecConfig(**ENCODEC_32KHZ), decoder=decoder)


def decoder_shape(state: Mapping[str, torch.Tensor]) -> Optional[tuple[int, int]]:
    """(width, layers) of the file's MusicGen decoder, or None when it holds none."""
    if _EMBED not in state:
        return None
    return int(state[_EMBED].shape[1]), count_indexed(state, _DECODER_LAYER)


def published_size(state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """"small" / "medium" / "large" for a file holding a published MusicGen, else None."""
    shape = decoder_shape(state)
    return PUBLISHED_SIZES[shape][0] if shape in PUBLISHED_SIZES else None


def build_release_musicgen(state: Mapping[str, torch.Tensor], path: str,
                           config_dir: Optional[str], dtype: torch.dtype):
    """(MusicgenForConditionalGeneration with the file's weights, unused keys).

    Parameters are created empty (accelerate's `init_empty_weights`) and the file's tensors are
    assigned, so nothing is initialised or copied twice; every parameter and stored buffer must
    come from the file (old `weight_g/weight_v` names of the EnCodec weight norm included).
    """
    from accelerate import init_empty_weights
    from transformers import MusicgenConfig, MusicgenForConditionalGeneration

    config = (MusicgenConfig.from_pretrained(config_dir) if config_dir is not None
              else published_musicgen_config(state, path))
    with init_empty_weights():  # parameters on meta; buffers (strides, paddings) real
        model = MusicgenForConditionalGeneration(config)
    unused = fill_component(model, PREFIX, state, path, dtype)
    return model.eval(), unused


def tokenizer_sources(config_dir: Optional[str], args: Mapping[str, Any],
                      state: Mapping[str, torch.Tensor]) -> list[str]:
    """Where the T5 tokenizer of a file-built MusicGen is looked for, in order."""
    sources = []
    if config_dir is not None:
        sources.append(config_dir)
    named = args.get("music_decoder_path")
    if named and "musicgen" in str(named).lower():
        sources.append(str(named))
    size = published_size(state)
    if size is not None:
        sources.append(f"facebook/musicgen-{size}")
    return list(dict.fromkeys(sources))


def load_tokenizer(sources: list[str]) -> tuple[Any, str]:
    """(the first T5 tokenizer found in `sources`, or None; what was tried and why it failed)."""
    from transformers import AutoTokenizer

    failures = []
    for src in sources:
        if Path(src).is_dir() and not has_tokenizer_files(Path(src)):
            failures.append(f"{src}: no tokenizer files")
            continue
        try:
            return AutoTokenizer.from_pretrained(src), ""
        except (OSError, ValueError) as exc:
            failures.append(f"{src}: {' '.join(str(exc).split())[:160]}")
    return None, "; ".join(failures) or "no source named"


def decoder_factory(decoder: Any, state: Mapping[str, torch.Tensor], path: str,
                    args: Mapping[str, Any], given: Optional[str], dtype: torch.dtype,
                    device: str, unused: dict[str, list[str]]
                    ) -> tuple[Optional[Callable[[], Any]], Any]:
    """(a builder of the MusicGen decoder the release file holds, the DecoderConfig to record).

    The builder runs on first use, from the published config of the file's size or a
    config-only `given` folder. It is None, and `decoder` is returned unchanged, when the decoder
    loads from `decoder.path` instead: `given` supplies weights (a folder with weights or a hub
    id), the file's MusicGen has no published shape, the file holds none, or the decoder is not
    MusicGen. The file's MusicGen keys that go unused are added to `unused` with the reason."""
    from llama.release.components import has_weights

    keys = [k for k in state if k.startswith(PREFIX)]
    if not keys:
        return None, decoder
    if decoder.kind != "musicgen":
        unused[f"MusicGen weights (the {decoder.kind} decoder was chosen)"] = keys
        return None, decoder
    if given is not None and has_weights(given):
        unused[f"{PREFIX}* (superseded by {given})"] = keys
        return None, decoder
    if given is None and published_size(state) is None:
        unused[f"{PREFIX}* (shape {decoder_shape(state)} is no published MusicGen size; "
               f"the decoder loads from {decoder.path})"] = keys
        return None, decoder
    mine = {k: state[k] for k in keys}  # the closure keeps only these tensors (memory-mapped)
    decoder = dataclasses.replace(decoder, path=given or f"published MusicGen in {path}")

    def build():
        from llama.decoders import DecoderLoadError, MusicGenDecoder

        try:
            musicgen, extra = build_release_musicgen(mine, path, given, dtype)
        except (ReleaseFileError, OSError, ValueError) as exc:
            raise DecoderLoadError(f"cannot build the MusicGen of {path}: {exc}") from exc
        if extra:
            log.info("%s: %d MusicGen key(s) not used, e.g. %s", path, len(extra), extra[:2])
        tokenizer, why = load_tokenizer(tokenizer_sources(given, args, mine))
        if tokenizer is None:
            log.warning("%s: MusicGen weights taken from the file; no T5 tokenizer found (%s): "
                        "music from text needs --music_decoder_path", path, why)
        return MusicGenDecoder(decoder, musicgen, tokenizer, device, dtype,
                               missing_tokenizer=why)

    return build, decoder
