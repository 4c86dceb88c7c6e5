"""PaSST, the AudioSet classifier of the paper's KL, in our own torch code (no torchaudio, timm).

The published evaluation called hear21passt's `get_basic_model(mode="logits")` (architecture
`passt_s_swa_p16_128_ap476`: checkpoint `passt-s-f128-p16-s10-ap.476-swa.pt`) on the first 10 s of
each clip at 32 kHz and took the softmax of the logits. What runs here, step by step:
- front end (hear21passt's mel in eval mode): pre-emphasis y[n] = x[n+1] - 0.97 x[n] (one sample
  shorter), STFT with n_fft 1024, hop 320, an 800-sample symmetric Hann window centred in the
  frame, centre padding by reflection; power spectrum; 128 Kaldi mel bands 0-15 kHz (the
  augmentation ranges are not drawn at inference); log(mel + 1e-5); (x + 4.5) / 5;
- patch embedding: a 16x16 convolution with stride 10 over the (128, frames) image, a frequency
  and a time positional encoding added (the time one cut to the clip's patch columns);
- the structured / unstructured patchout are training-only: nothing is dropped at inference;
- a CLS and a distillation token (each with its own positional encoding) before the patches, 12
  pre-norm ViT blocks (768 wide, 12 heads, MLP 3072, GELU, LayerNorm eps 1e-6), final norm;
- head: the mean of the two token outputs, LayerNorm, Linear to 527 AudioSet logits (the
  distillation head's weights are in the checkpoint but unused at inference, as in the reference).
The weights come from the user's file (safetensors or `torch.load(weights_only=True)`), keyed as
the published checkpoint (or as the hear21passt wrapper's state dict, with its `net.` prefix).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn

SHOW = 5


@dataclass(frozen=True)
class PasstConfig:
    """Architecture and front end; the defaults are the published PaSST-S (ap .476)."""

    embed_dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    classes: int = 527
    patch: int = 16
    stride: int = 10
    freq_patches: int = 12  # (128 - 16) // 10 + 1 patch rows
    time_patches: int = 99  # hear21passt's input_tdim 998 // 10: the time encoding's length
    n_mels: int = 128
    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int = 800
    hop: int = 320
    fmin: float = 0.0
    fmax: float = 15000.0  # hear21passt: sr // 2 - fmax_aug_range // 2 with range 2000


PASST_S = PasstConfig()
MAX_SECONDS = 10.0  # the paper's KL read the first 10 s; 10 s give 1000 frames = 99 patch columns


# ---------------------------------------------------------------------------- front end
def mel_filterbank(cfg: PasstConfig = PASST_S) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Kaldi mel triangles over [fmin, fmax] (Nyquist column zero)."""
    from Evaluation.imagebind.preprocess import kaldi_mel_banks

    banks = kaldi_mel_banks(cfg.n_mels, cfg.n_fft, cfg.sample_rate, cfg.fmin, cfg.fmax)
    return torch.from_numpy(banks).float()


class PasstMel(nn.Module):
    """(B, samples) waveform at 32 kHz -> (B, n_mels, frames) normalised log-mel."""

    def __init__(self, cfg: PasstConfig = PASST_S) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=False),
                             persistent=False)
        self.register_buffer("banks", mel_filterbank(cfg), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        x = wave[:, 1:] - 0.97 * wave[:, :-1]
        spec = torch.stft(x, c.n_fft, hop_length=c.hop, win_length=c.win_length,
                          window=self.window, center=True, pad_mode="reflect", normalized=False,
                          return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2
        mel = torch.matmul(self.banks, power)
        return (torch.log(mel + 1e-5) + 4.5) / 5.0


# ---------------------------------------------------------------------------- network
class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: PasstConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch, stride=cfg.stride)


class Passt(nn.Module):
    """(B, 1, n_mels, frames) log-mel -> (B, classes) logits; parameter names as published."""

    def __init__(self, cfg: PasstConfig = PASST_S) -> None:
        super().__init__()
        self.cfg = cfg
        d, f, t = cfg.embed_dim, cfg.freq_patches, cfg.time_patches
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, d))
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, d, f, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, d, 1, t))
        self.blocks = nn.Sequential(*[Block(d, cfg.heads, cfg.mlp_ratio)
                                      for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.classes))
        self.head_dist = nn.Linear(d, cfg.classes)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(mel)  # (B, D, F, T)
        columns = x.shape[-1]
        if columns > self.time_new_pos_embed.shape[-1]:
            raise ValueError(f"{columns} patch columns exceed the model's "
                             f"{self.time_new_pos_embed.shape[-1]} (more than 10 s of audio)")
        x = x + self.time_new_pos_embed[..., :columns] + self.freq_new_pos_embed
        x = x.flatten(2).transpose(1, 2)  # frequency-major patch order
        b = x.shape[0]
        tokens = torch.cat([self.cls_token + self.new_pos_embed[:, :1],
                            self.dist_token + self.new_pos_embed[:, 1:]], dim=1)
        x = self.norm(self.blocks(torch.cat([tokens.expand(b, -1, -1), x], dim=1)))
        return self.head((x[:, 0] + x[:, 1]) / 2)


# ---------------------------------------------------------------------------- weights
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors, keyed as the published PaSST (wrapper prefixes removed)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"PaSST weights {p} do not exist (passt-s-f128-p16-s10-ap.476-"
                                "swa.pt, the checkpoint hear21passt's get_basic_model loads)")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, SafetensorError) as exc:
        raise ValueError(f"{p}: not a readable PaSST state dict (safetensors, or a torch file "
                         f"of tensors only): {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{p}: not a PaSST state dict of tensors")
    if any(k.startswith("net.") for k in state):  # hear21passt's wrapper (mel has no weights)
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return dict(state)


def infer_config(state: dict[str, torch.Tensor], heads: int = PASST_S.heads) -> PasstConfig:
    """The architecture the tensors describe (the head count is not visible in shapes)."""
    try:
        w = state["patch_embed.proj.weight"]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        if w.shape[0] % heads:
            raise ValueError(f"width {w.shape[0]} is not divisible into {heads} heads")
        return PasstConfig(
            embed_dim=w.shape[0], depth=depth, heads=heads, patch=w.shape[-1],
            mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / w.shape[0],
            classes=state["head.1.weight"].shape[0],
            freq_patches=state["freq_new_pos_embed"].shape[2],
            time_patches=state["time_new_pos_embed"].shape[3])
    except (KeyError, IndexError) as exc:
        raise ValueError(f"not a PaSST state dict: {exc!r} missing or malformed") from exc


def load_passt(path: str | Path, heads: int = PASST_S.heads, device: str = "cpu") -> Passt:
    """A PaSST filled strictly from the file: a missing, extra or mis-shaped tensor is an error."""
    state = read_state_dict(path)
    cfg = infer_config(state, heads)
    w = state["patch_embed.proj.weight"]
    if w.ndim < 4:  # checkpoints from before the convolutional patchify stored it flat
        state["patch_embed.proj.weight"] = w.reshape(cfg.embed_dim, 1, cfg.patch, cfg.patch)
    with torch.device("meta"):
        model = Passt(cfg)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    bad = sorted(k for k in set(want) & set(state) if tuple(state[k].shape) != want[k])
    if missing or extra or bad:
        raise ValueError(f"{path} does not match a PaSST of {cfg}: missing {missing[:SHOW]}, "
                         f"unexpected {extra[:SHOW]}, wrong shapes {bad[:SHOW]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return model.eval().to(device)


class PasstClassifier:
    """The paper's KL classifier: waveform at 32 kHz -> softmax of PaSST's AudioSet logits on
    the first 10 s, each clip on its own (as the published loop ran it, batch of one)."""

    def __init__(self, weights: str | Path, device: str = "cpu", heads: int = PASST_S.heads,
                 max_seconds: float = MAX_SECONDS) -> None:
        self.model = load_passt(weights, heads, device)
        self.cfg = self.model.cfg
        self.mel = PasstMel(self.cfg).to(device)
        self.sample_rate = self.cfg.sample_rate
        self.max_seconds = max_seconds
        self.device = device
        self.identity = f"passt:{Path(weights).name}"

    @property
    def is_published_architecture(self) -> bool:
        return self.cfg == PASST_S

    @torch.no_grad()
    def logits(self, wave: np.ndarray) -> np.ndarray:
        n = int(self.max_seconds * self.sample_rate)
        x = torch.as_tensor(np.asarray(wave, np.float32)[:n])[None].to(self.device)
        min_samples = (self.cfg.patch - 1) * self.cfg.hop + 1  # 16 frames: one patch column
        if x.shape[1] < min_samples:
            ms = math.ceil(min_samples / self.sample_rate * 1000)
            raise ValueError(f"PaSST needs at least {ms} ms of audio, got {x.shape[1]} samples")
        return self.model(self.mel(x)[:, None]).double().cpu().numpy()[0]

    def probs(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        """Softmax over the 527 logits (the published KL's choice; PaSST trained with sigmoids)."""
        return np.stack([torch.softmax(torch.from_numpy(self.logits(w)), -1).numpy()
                         for w in waves])
