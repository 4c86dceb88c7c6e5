"""How a release key maps to ours: ONE table, to check against a release's key list on one screen.

A release file's `model` is the published trainer's full state dict. Each key is, in this order:
1. renamed if it carries an old name (`LEGACY`, applied when the file is read);
2. left unused if `IGNORED` names it (the reason is reported);
3. handed to a frozen component if it starts with a `COMPONENTS` prefix (inside, older
   transformers names are renamed by transformers' own conversion mapping: `COMPONENT_LEGACY`
   lists the ones the releases carry);
4. mapped onto our state dict by the first matching `RULES` row;
5. otherwise unknown (an error unless `allow_partial`).
The file's other entries (`FILE_ENTRIES`) are not model weights.

Patterns: `{n}`, `{i}`, `{k}` match a number, `{name}` the rest of the key, `{bridge}` a bridge
prefix of `BRIDGES`; a target's `{modality}` is that bridge's modality and `{block}` is `{i} - 1`
(the releases count bridge blocks from 1). Adding a layout is a `LAYOUTS` row (the keys that
identify it, its chat style) plus its configuration in `llama/release/infer.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch

from llama import chat_style
from llama.chat_style import ChatStyle

# ---------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Layout:
    """A release layout: found when all `required` keys (and `marker`, if any) are present."""

    name: str
    required: tuple[str, ...]
    marker: Optional[str]
    style: ChatStyle
    about: str


_M2UGEN_KEYS = ("llama.tok_embeddings.weight", "llama.layers.0.attention.wq.weight",
                "prefix_query.weight", "mu_mert_agg.weight", "output_projector.fc.weight")
LAYOUTS: tuple[Layout, ...] = (  # first match wins
    Layout("mumu-llama", _M2UGEN_KEYS, "mu_mert_rnn.weight_ih_l0", chat_style.PUBLISHED_MUMU_LLAMA,
           "MuMu-LLaMA (newer): RNN + attention music pooling; its video path never ran"),
    Layout("m2ugen", _M2UGEN_KEYS, None, chat_style.PUBLISHED_M2UGEN,
           "M2UGen (older): mean music pooling; MusicGen or AudioLDM2 releases"),
)


@dataclass(frozen=True)
class Legacy:
    old: str
    new: str
    why: str


LEGACY: tuple[Legacy, ...] = (  # key prefixes, renamed when the file is read
    Legacy("module.", "", "DDP wrapper of the published trainer (the older release)"),
    Legacy("iu_vit_rnn.", "iu_vivit_rnn.", "the newer loader renamed the video RNN"),
    Legacy("iu_vit_attention.", "iu_vivit_attention.", "... and the video attention pooling"),
)

COMPONENT_LEGACY: tuple[Legacy, ...] = (  # inside COMPONENTS: transformers' conversion mapping
    Legacy("encoder.pos_conv_embed.conv.weight_g",
           "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
           "MERT weight norm as 2023 transformers saved it (EnCodec's convolutions too)"),
    Legacy("encoder.pos_conv_embed.conv.weight_v",
           "encoder.pos_conv_embed.conv.parametrizations.weight.original1", "idem"),
    Legacy("encoder.layer.{n}.attention.attention.query.weight",
           "layers.{n}.attention.q_proj.weight",
           "ViT / ViViT attention of 2023 transformers (key, value, output, mlp alike)"),
)

COMPONENTS: dict[str, str] = {  # frozen parts the file holds: key prefix -> what reads them
    "mert_model.": "audio",  # MERT, run as transformers' HubertModel
    "vit_model.": "image",  # ViTModel
    "vivit_model.": "video",  # VivitModel
    "generation_model.": "musicgen",  # MusicgenForConditionalGeneration (MusicGen releases)
}

BRIDGES: dict[str, str] = {"mu_mert": "audio", "iu_vivit": "video", "iu_vit": "image"}


@dataclass(frozen=True)
class Rule:
    """release key -> our key. `new_rows`: rows past the base vocabulary ([AUD0..7]) go to this
    key instead. `flatten`: the tensor is reshaped to one dimension."""

    release: str
    ours: str
    new_rows: Optional[str] = None
    flatten: bool = False


RULES: tuple[Rule, ...] = (  # first match wins
    Rule("llama.tok_embeddings.weight", "backbone.tok_embeddings.weight",
         new_rows="backbone.new_tok_embeddings"),
    Rule("llama.output.weight", "backbone.output.weight", new_rows="backbone.new_output"),
    Rule("llama.layers.{n}.attention.gate", "backbone.layers.{n}.attention.gate", flatten=True),
    Rule("llama.{name}", "backbone.{name}"),  # Meta names; LoRA lora_w*_l1/_l2, biases
    Rule("prefix_query.weight", "backbone.prefix_query.weight"),
    Rule("{bridge}_norm_{i}.{name}", "bridges.{modality}.blocks.{block}.norm.{name}"),
    Rule("{bridge}_f{k}_{i}.{name}", "bridges.{modality}.blocks.{block}.w{k}.{name}"),
    Rule("{bridge}_{name}", "bridges.{modality}.{name}"),  # agg, proj, rnn, attention
    Rule("output_projector.{name}", "projector.{name}"),
)


@dataclass(frozen=True)
class Ignored:
    """Release keys with no use here. `when(fields, first_adapter_layer)`: only if true."""

    release: str
    why: str
    when: Optional[Callable[[Mapping[str, str], int], bool]] = None


_NEVER_RAN = "the newer release's video RNN/attention (its video path never ran)"
IGNORED: tuple[Ignored, ...] = (
    Ignored("iu_vivit_rnn.{name}", _NEVER_RAN),
    Ignored("iu_vivit_attention.{name}", _NEVER_RAN),
    Ignored("llama.layers.{n}.attention.gate", "gates of layers without an adapter",
            when=lambda f, first_adapter: int(f["n"]) < first_adapter),
    Ignored("vit_model.pooler.{name}", "the ViT pooler (the bridge reads every token)"),
    Ignored("vivit_model.pooler.{name}", "the ViViT pooler (the bridge reads every token)"),
)

FILE_ENTRIES: dict[str, str] = {  # the file's dict besides `model`
    "args": "read: the published run's flags (music_decoder, music_decoder_path)",
    "optimizer": "not read: AdamW state of the published run (a new run starts its own)",
    "scaler": "not read: its fp16 loss scaler",
    "epoch": "not read: its epoch counter",
}

# ---------------------------------------------------------------------------------------------
# Applying it


_FIELDS = {"n": r"\d+", "i": r"\d+", "k": r"\d+", "name": r".+",
           "bridge": "|".join(sorted(BRIDGES, key=len, reverse=True))}


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A table pattern as an anchored regex with one named group per `{field}`."""
    parts = re.split(r"\{(\w+)\}", pattern)
    rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_FIELDS[p]})"
                 for i, p in enumerate(parts))
    return re.compile(rx + "$")


_RULES = [(compile_pattern(r.release), r) for r in RULES]
_IGNORED = [(compile_pattern(r.release), r) for r in IGNORED]


def canonical_key(key: str) -> str:
    """A file key with its `LEGACY` prefixes renamed (the name the rest of the table uses)."""
    for legacy in LEGACY:
        if key.startswith(legacy.old):
            key = legacy.new + key[len(legacy.old):]
    return key


def render(target: str, fields: Mapping[str, str]) -> str:
    """A rule's target with the matched fields filled in (`{modality}`, `{block}` derived)."""
    values = dict(fields)
    if "bridge" in values:
        values["modality"] = BRIDGES[values["bridge"]]
    if "i" in values:
        values["block"] = str(int(values["i"]) - 1)
    return target.format(**values)


def ignored_reason(key: str, first_adapter_layer: int) -> Optional[str]:
    for rx, row in _IGNORED:
        m = rx.match(key)
        if m and (row.when is None or row.when(m.groupdict(), first_adapter_layer)):
            return row.why
    return None


def component_of(key: str) -> Optional[str]:
    return next((p for p in COMPONENTS if key.startswith(p)), None)


@dataclass
class KeyMap:
    """Where every key of a release went."""

    ours: dict[str, torch.Tensor]  # our state-dict key -> tensor (the file's, maybe a view)
    source: dict[str, str]  # our key -> the release key it came from (for messages)
    components: dict[str, dict[str, torch.Tensor]]  # COMPONENTS prefix -> its keys
    ignored: dict[str, list[str]]  # reason -> release keys
    unknown: list[str]


def map_keys(state: Mapping[str, torch.Tensor], base_vocab: int, first_adapter_layer: int
             ) -> KeyMap:
    """Sort a release state dict (canonical keys) by the table: `base_vocab` splits the
    vocabulary rows, `first_adapter_layer` tells which gates are used."""
    out = KeyMap({}, {}, {p: {} for p in COMPONENTS}, {}, [])
    for key, value in state.items():
        why = ignored_reason(key, first_adapter_layer)
        if why is not None:
            out.ignored.setdefault(why, []).append(key)
            continue
        prefix = component_of(key)
        if prefix is not None:
            out.components[prefix][key] = value
            continue
        match = next(((m, r) for rx, r in _RULES if (m := rx.match(key))), None)
        if match is None:
            out.unknown.append(key)
            continue
        m, rule = match
        ours = render(rule.ours, m.groupdict())
        if rule.new_rows is not None:
            out.ours[rule.new_rows] = value[base_vocab:]
            out.source[rule.new_rows] = key
            value = value[:base_vocab]
        out.ours[ours] = value.reshape(-1) if rule.flatten else value
        out.source[ours] = key
    return out
