"""MERT hidden states, window by window, into per-clip outputs of bounded size.

Facts: docs/MODEL.md section 3 (which state each of the 25 positions holds), docs/MEMORY.md
(long music).

Two jobs, both for `llama.encoders.MusicEncoder`:

- `LayerInputs` collects the S = L + 1 states of a HuBERT-shaped encoder in the order MERT's own
  code and transformers 4.x return them: state i < L is the input of layer i (state 0: the
  feature projection + positional convolution; the encoder's layer norm already applied for a
  post-norm "group" MERT), state L is the encoder output (`last_hidden_state`, after the final
  layer norm of a `do_stable_layer_norm` MERT such as MERT-v1-330M). transformers 5 returns the
  last layer's output BEFORE that norm as `hidden_states[-1]`; reading the layer inputs with
  hooks gives the published order whatever the transformers version, and holds one state at a
  time instead of all S.
- `chunk_front_end` runs the convolutional front end of a layer-norm MERT (MERT-v1-330M) on
  pieces of 2 s: its 512-channel activations at the first convolution's 4.8 kHz rate
  take ~1 GB per 30 s of window otherwise, more than the transformer layers after it. Each output
  frame depends only on its own receptive field (convolutions without padding, a layer norm over
  channels per position), so the pieces give the frames of the whole window.
- A sink per clip receives each state of each window as soon as it exists and keeps only what
  its consumer needs: `StackSink` the whole (S, T, H) stack (what the feature cache stores),
  `MixSink` the bridge's 1x1-conv mix of the S states per frame (T, H), `MeanSink` the per-state
  mean over frames (S, 1, H), `PoolSink` the bridge's whole rnn-attention pooling (H,): the RNN
  runs window after window with its hidden state carried over, and the attention softmax over
  all frames is folded in as a running maximum, denominator and weighted sum. So a clip's peak
  memory is its output plus one window's activations, never all states of all frames of the
  clip; with `PoolSink` (what the model uses at inference) the output does not grow at all.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EncodedAudio(NamedTuple):
    """MERT output for a batch: every hidden state of every frame, and which frames are real."""

    hidden_states: torch.Tensor  # (B, S, T, H) float32, S = num_hidden_layers + 1
    mask: torch.Tensor  # (B, T) bool, True = a real frame (clips differ in length)


class FrameMix(NamedTuple):
    """Reduce each frame's S states to `sum_s weight[s] * state_s + bias` (the bridge's 1x1 conv
    over states), in float32."""

    weight: torch.Tensor  # (S,)
    bias: float


class MixedAudio(NamedTuple):
    """A batch of MERT output already reduced to the music bridge's state mix (`FrameMix`)."""

    frames: torch.Tensor  # (B, T, H) float32
    mask: torch.Tensor  # (B, T) bool, True = a real frame


class StateMean(NamedTuple):
    """Reduce each state to its mean over the clip's frames."""


class FramePool(NamedTuple):
    """The music bridge's rnn-attention pooling before its head: state mix, optional unit
    frames, RNN over time, attention softmax over all frames, weighted sum."""

    mix: FrameMix
    rnn: nn.RNN
    attention: nn.Linear
    unit_frames: bool  # the newer release's L2 normalisation of every mixed frame


class PooledAudio(NamedTuple):
    """A batch of MERT output already pooled by the music bridge (`FramePool`)."""

    vectors: torch.Tensor  # (B, H) float32
    mask: torch.Tensor  # (B, 1) bool, all True (one vector per clip)


Reduction = FrameMix | StateMean | FramePool | None


class StackSink:
    """All states of every frame: (S, T, H) float32, filled window by window in place."""

    def __init__(self, s: int, t: int, h: int, device: torch.device) -> None:
        self.out = torch.empty(s, t, h, dtype=torch.float32, device=device)

    def add(self, state: int, start: int, x: torch.Tensor) -> None:
        self.out[state, start: start + x.shape[0]] = x

    def result(self) -> torch.Tensor:
        return self.out


class MixSink:
    """The bridge's state mix per frame, accumulated state by state: (T, H) float32."""

    def __init__(self, mix: FrameMix, t: int, h: int, device: torch.device) -> None:
        self.weight = mix.weight.detach().float().cpu().tolist()
        self.out = torch.full((t, h), float(mix.bias), dtype=torch.float32, device=device)

    def add(self, state: int, start: int, x: torch.Tensor) -> None:
        self.out[start: start + x.shape[0]].add_(x.float(), alpha=self.weight[state])

    def result(self) -> torch.Tensor:
        return self.out


class MeanSink:
    """Per-state sums over frames, divided at the end: (S, 1, H) float32."""

    def __init__(self, s: int, t: int, h: int, device: torch.device) -> None:
        self.sums = torch.zeros(s, 1, h, dtype=torch.float32, device=device)
        self.frames = t

    def add(self, state: int, start: int, x: torch.Tensor) -> None:
        self.sums[state, 0] += x.float().sum(0)

    def result(self) -> torch.Tensor:
        return self.sums / self.frames


class PoolSink:
    """`FramePool` window by window, in time order: (H,) float32 per clip."""

    def __init__(self, pool: FramePool, s: int, h: int, device: torch.device) -> None:
        self.pool, self.s = pool, s
        self.weight = pool.mix.weight.detach().float().cpu().tolist()
        self.window: Optional[torch.Tensor] = None  # the mix of the window being received
        self.next_start = 0
        self.hidden: Optional[torch.Tensor] = None  # the RNN's state after the last window
        self.top = torch.tensor(float("-inf"), device=device)  # running max score
        self.denominator = torch.zeros((), device=device)
        self.weighted = torch.zeros(h, device=device)

    def add(self, state: int, start: int, x: torch.Tensor) -> None:
        if state == 0:
            if start != self.next_start:
                raise RuntimeError("PoolSink: the windows of a clip must arrive in time order")
            self.window = torch.full(x.shape, float(self.pool.mix.bias), dtype=torch.float32,
                                     device=x.device)
        assert self.window is not None
        self.window.add_(x.float(), alpha=self.weight[state])
        if state == self.s - 1:
            self._fold(self.window)
            self.next_start, self.window = start + x.shape[0], None

    def _fold(self, frames: torch.Tensor) -> None:
        if self.pool.unit_frames:
            frames = F.normalize(frames, dim=-1)
        rnn = self.pool.rnn
        out, self.hidden = rnn(frames[None].to(rnn.weight_ih_l0.dtype), self.hidden)
        out = out[0].float()
        scores = self.pool.attention(out.to(self.pool.attention.weight.dtype)).squeeze(-1)
        top = torch.maximum(self.top, scores.float().max())
        decay, w = torch.exp(self.top - top), torch.exp(scores.float() - top)
        self.weighted = self.weighted * decay + w @ out
        self.denominator = self.denominator * decay + w.sum()
        self.top = top

    def result(self) -> torch.Tensor:
        return self.weighted / self.denominator


Sink = StackSink | MixSink | MeanSink | PoolSink


def make_sink(reduction: Reduction, s: int, t: int, h: int, device: torch.device) -> Sink:
    if reduction is None:
        return StackSink(s, t, h, device)
    if isinstance(reduction, FrameMix):
        if reduction.weight.numel() != s:
            raise ValueError(f"the state mix has {reduction.weight.numel()} weights, the encoder "
                             f"yields {s} states")
        return MixSink(reduction, t, h, device)
    if isinstance(reduction, StateMean):
        return MeanSink(s, t, h, device)
    if isinstance(reduction, FramePool):
        if reduction.mix.weight.numel() != s:
            raise ValueError(f"the state mix has {reduction.mix.weight.numel()} weights, the "
                             f"encoder yields {s} states")
        return PoolSink(reduction, s, h, device)
    raise TypeError(f"unknown music reduction {reduction!r}")


def collate_music(items: Sequence[torch.Tensor]) -> "EncodedAudio | MixedAudio | PooledAudio":
    """Right-pad per-clip (S, T_i, H) features to (B, S, T, H) with a (B, T) frame mask;
    (T_i, H) mixed frames (`FrameMix`) likewise to `MixedAudio` (B, T, H); pooled (H,) vectors
    (`FramePool`) stacked into `PooledAudio`."""
    if not items:
        raise ValueError("collate needs at least one item")
    if items[0].dim() == 1:
        vectors = torch.stack(list(items))
        return PooledAudio(vectors, torch.ones(len(items), 1, dtype=torch.bool,
                                               device=vectors.device))
    mixed = items[0].dim() == 2
    lead = () if mixed else (items[0].shape[0],)
    h = items[0].shape[-1]
    t = max(x.shape[-2] for x in items)
    states = items[0].new_zeros(len(items), *lead, t, h)
    mask = torch.zeros(len(items), t, dtype=torch.bool, device=items[0].device)
    for i, x in enumerate(items):
        if x.shape[:-2] != lead or x.shape[-1] != h:
            want = "(T, H)" if mixed else f"(S={lead[0]}, T, H={h})"
            raise ValueError(f"audio feature {i} has shape {tuple(x.shape)}, expected {want}")
        states[i, ..., : x.shape[-2], :] = x
        mask[i, : x.shape[-2]] = True
    return MixedAudio(states, mask) if mixed else EncodedAudio(states, mask)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a HuBERT-shaped encoder (transformers' HuBERT, MERT's code)."""
    layers = getattr(getattr(model, "encoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(f"{type(model).__name__} has no `encoder.layers`: not a HuBERT-shaped "
                         "MERT")
    return layers


@contextmanager
def layer_inputs(model: nn.Module, emit: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
    """While active, every forward of `model` calls `emit(i, input of layer i)` for each layer."""
    handles = []
    for i, layer in enumerate(encoder_layers(model)):
        def hook(_module, args, kwargs, i=i):
            emit(i, args[0] if args else kwargs["hidden_states"])
        handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def exact_weight_norm(model: nn.Module) -> int:
    """Compute every weight norm (HuBERT's positional convolution) in float64. The norm is a
    reduction whose float32 result depends on the number of threads, which made the features of
    one process differ in the last bits from those of a torchrun process with another thread
    count; in float64 the rounded float32 weight is the same. Parameter names are unchanged.
    Returns how many weight norms were changed."""
    from torch.nn.utils import parametrize

    n = 0
    for module in model.modules():
        if not parametrize.is_parametrized(module, "weight"):
            continue
        for p in module.parametrizations.weight:
            if hasattr(p, "dim") and type(p).__name__ == "_WeightNorm":
                def forward(weight_g: torch.Tensor, weight_v: torch.Tensor,
                            dim: int = p.dim) -> torch.Tensor:
                    w = torch._weight_norm(weight_v.double(), weight_g.double(), dim)
                    return w.to(weight_v.dtype)

                p.forward = forward
                n += 1
    return n


def receptive_field_and_hop(config) -> tuple[int, int]:
    """Samples one output frame sees (MERT: 400) and samples between frames (320)."""
    r, hop = 1, 1
    for k, s in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        r = (r - 1) * s + k
    for s in config.conv_stride:
        hop *= s
    return r, hop


def chunk_front_end(model: nn.Module, chunk_samples: int) -> bool:
    """Make `model.feature_extractor` run on pieces of about `chunk_samples` input samples (the
    module's own forward per piece, frames concatenated). Only for the per-position layer-norm
    front end: a group-norm one normalises over time, so it is left whole (returns False)."""
    config = model.config
    front = getattr(model, "feature_extractor", None)
    if (getattr(config, "feat_extract_norm", None) != "layer" or front is None
            or getattr(config, "feature_extractor_cqt", False)):
        return False
    field, hop = receptive_field_and_hop(config)
    chunk_frames = max(1, chunk_samples // hop)
    whole = front.forward
    span = chunk_frames * hop + field - hop  # samples of one piece of chunk_frames frames

    def forward(input_values: torch.Tensor) -> torch.Tensor:
        n = input_values.shape[-1]
        if n <= span:
            return whole(input_values)
        pieces = [whole(input_values[..., s: s + span])
                  for s in range(0, n - field + 1, chunk_frames * hop)]
        return torch.cat(pieces, dim=-1)

    front.forward = forward
    return True


__all__ = ["EncodedAudio", "collate_music", "FrameMix", "FramePool", "MixedAudio", "PooledAudio",
           "PoolSink", "StateMean", "Reduction", "StackSink", "MixSink", "MeanSink", "make_sink",
           "encoder_layers", "layer_inputs", "chunk_front_end", "receptive_field_and_hop",
           "exact_weight_norm"]
