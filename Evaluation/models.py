"""Embedding / classifier models the generation metrics run, loaded from local folders or hub ids.

Offline by default (HF_HUB_OFFLINE=1): a hub id works only if it is already in the local cache.
- VGGish: our own nn.Module with torchvggish's parameter names (`features.N`, `embeddings.N`), so
  torchvggish's state dict (`vggish-10086976.pth`) loads strictly; the log-mel front end follows
  the VGGish recipe (16 kHz, 25 ms Hann window, 10 ms hop, 64 mel bands 125-7500 Hz,
  log(mel + 0.01), 0.96 s examples). Published FAD used it without PCA and before the last ReLU.
- CLAP: transformers `ClapModel` + `ClapProcessor` (laion/clap-htsat-unfused = LAION-CLAP 630k
  non-fusion as converted by transformers).
- AudioSet classifier: transformers `ASTForAudioClassification` (MIT/ast-finetuned-audioset-
  10-10-0.4593, 527 classes, 16 kHz, 10.24 s input). The paper used PaSST (hear21passt, 32 kHz,
  patchout transformer): same label set, different network, so AST's KL is not comparable; the
  paper's classifier is `Evaluation.metrics.passt` (`--kl_model passt`).
- Alternatives for FAD: EnCodec encoder frames (`EncodecModel`) or a HuBERT-compatible MERT
  folder's last hidden states.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

VGGISH_SR = 16000


class VGGish(nn.Module):
    """VGG-style CNN: (B, 1, 96, 64) log-mel examples -> (B, 128) embeddings."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for spec in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(spec), 3, padding=1), nn.ReLU(inplace=True)]
                c_in = int(spec)
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096), nn.ReLU(True),
            nn.Linear(4096, 128), nn.ReLU(True))

    def forward(self, x: torch.Tensor, final_relu: bool = True) -> torch.Tensor:
        x = self.features(x)  # (B, 512, 6, 4)
        x = x.permute(0, 2, 3, 1).flatten(1)  # TF's NHWC flatten order, as the ported weights need
        head = self.embeddings if final_relu else self.embeddings[:-1]
        return head(x)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def vggish_mel_matrix(n_fft: int = 512, sr: int = VGGISH_SR, n_mels: int = 64,
                      fmin: float = 125.0, fmax: float = 7500.0) -> np.ndarray:
    """(n_fft//2+1, n_mels) triangular weights in the HTK mel domain, DC bin zeroed."""
    bins_mel = _hz_to_mel(np.linspace(0.0, sr / 2, n_fft // 2 + 1))
    edges = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    w = np.empty((len(bins_mel), n_mels))
    for i in range(n_mels):
        lo, c, hi = edges[i:i + 3]
        rise, fall = (bins_mel - lo) / (c - lo), (hi - bins_mel) / (hi - c)
        w[:, i] = np.maximum(0.0, np.minimum(rise, fall))
    w[0, :] = 0.0
    return w


def vggish_examples(wave16k: np.ndarray) -> np.ndarray:
    """16 kHz mono waveform -> (n, 96, 64) log-mel examples (0.96 s each, no overlap)."""
    x = np.asarray(wave16k, dtype=np.float64)
    win, hop, n_fft = 400, 160, 512
    if len(x) < win:
        return np.zeros((0, 96, 64), dtype=np.float32)
    n = 1 + (len(x) - win) // hop
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    mag = np.abs(np.fft.rfft(frames * window, n_fft))
    logmel = np.log(mag @ vggish_mel_matrix() + 0.01)
    k = len(logmel) // 96
    return logmel[: k * 96].reshape(k, 96, 64).astype(np.float32)


class VGGishEmbedder:
    """torchvggish-format weights -> per-window embeddings (published FAD: pre-ReLU, no PCA)."""

    sample_rate = VGGISH_SR

    def __init__(self, weights: str | Path, device: str = "cpu") -> None:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("pproc.")}
        with torch.device("meta"):  # no random init of 72 M parameters: the file fills them
            self.model = VGGish()
        self.model.load_state_dict(state, strict=True, assign=True)
        self.model.eval().to(device)
        self.device = device
        self.identity = f"vggish:{Path(weights).name}"

    @torch.no_grad()
    def embed(self, wave16k: np.ndarray) -> np.ndarray:
        ex = vggish_examples(wave16k)
        if len(ex) == 0:
            return np.zeros((0, 128), dtype=np.float32)
        x = torch.from_numpy(ex)[:, None].to(self.device)
        return self.model(x, final_relu=False).cpu().numpy()


class ClapEmbedder:
    """transformers CLAP: audio (48 kHz) and text embeddings in the shared space."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        from transformers import ClapModel, ClapProcessor

        self.model = ClapModel.from_pretrained(path).eval().to(device)
        self.processor = ClapProcessor.from_pretrained(path)
        self.sample_rate = int(self.processor.feature_extractor.sampling_rate)
        self.device = device
        self.identity = f"clap:{path}"

    @torch.no_grad()
    def audio(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        inp = self.processor(audio=[np.asarray(w, np.float32) for w in waves],
                             sampling_rate=self.sample_rate, return_tensors="pt")
        out = self.model.get_audio_features(**{k: v.to(self.device) for k, v in inp.items()})
        return _tensor(out).cpu().numpy()

    @torch.no_grad()
    def text(self, texts: Sequence[str]) -> np.ndarray:
        inp = self.processor(text=list(texts), return_tensors="pt", padding=True)
        out = self.model.get_text_features(**{k: v.to(self.device) for k, v in inp.items()})
        return _tensor(out).cpu().numpy()


def _tensor(out) -> torch.Tensor:
    """transformers 5 may return a model output instead of a bare tensor from get_*_features."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


class ASTClassifier:
    """AudioSet classifier (AST): waveform -> class probabilities (softmax of logits)."""

    def __init__(self, path: str, device: str = "cpu", max_seconds: float = 10.0) -> None:
        from transformers import ASTFeatureExtractor, ASTForAudioClassification

        self.model = ASTForAudioClassification.from_pretrained(path).eval().to(device)
        self.extractor = ASTFeatureExtractor.from_pretrained(path)
        self.sample_rate = int(self.extractor.sampling_rate)
        self.max_seconds = max_seconds
        self.device = device
        self.identity = f"ast:{path}"

    @torch.no_grad()
    def probs(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        n = int(self.max_seconds * self.sample_rate)
        inp = self.extractor([np.asarray(w[:n], np.float32) for w in waves],
                             sampling_rate=self.sample_rate, return_tensors="pt")
        logits = self.model(**{k: v.to(self.device) for k, v in inp.items()}).logits
        return torch.softmax(logits.double(), dim=-1).cpu().numpy()


class EncodecEmbedder:
    """EnCodec encoder frames as FAD embeddings (one row per latent frame)."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        from transformers import EncodecModel

        self.model = EncodecModel.from_pretrained(path).eval().to(device)
        self.sample_rate = int(self.model.config.sampling_rate)
        self.device = device
        self.identity = f"encodec:{path}"

    @torch.no_grad()
    def embed(self, wave: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(wave, np.float32))[None, None].to(self.device)
        return self.model.encoder(x)[0].T.cpu().numpy()  # (frames, dim)


def load_embedder(kind: str, path: str, device: str = "cpu"):
    """FAD embedding model by name: vggish (state-dict file), clap, encodec (folders / hub ids)."""
    if kind == "vggish":
        return VGGishEmbedder(path, device)
    if kind == "encodec":
        return EncodecEmbedder(path, device)
    if kind == "clap":
        clap = ClapEmbedder(path, device)
        clap.embed = lambda w: clap.audio([w])  # type: ignore[attr-defined]
        return clap
    raise ValueError(f"unknown embedding model kind {kind!r} (vggish, clap, encodec)")


def resample(wave: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Mono float32 at `target` Hz (librosa's soxr resampler)."""
    if sr == target:
        return np.asarray(wave, np.float32)
    import librosa

    return librosa.resample(np.asarray(wave, np.float32), orig_sr=sr, target_sr=target)


def maybe(path: Optional[str], loader, *a):
    return None if not path else loader(path, *a)
