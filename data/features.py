"""Cache of frozen-model outputs: encoder features per media file, decoder targets per caption.

The frozen encoders (MERT, ViT, ViViT) and the decoder's text conditioning never change during
training, so their outputs are computed once and reused across epochs and runs.

Layout: one safetensors file per entry (tensor "features", fp16 or fp32)

    <cache_dir>/media/<key[:2]>/<key>.safetensors      key = sha256(file content, encoder identity,
                                                              loader parameters)
    <cache_dir>/text/<key[:2]>/<key>.safetensors       key = sha256(text, decoder identity)

Stale entries are never served: anything that changes the features (the file's bytes, the encoder's
weights / config / preprocessing via `encoder.identity`, the loader's parameters such as the sample
rate or frame count) changes the key, so the old entry is simply not looked up. The storage dtype
is not part of the key: an entry precomputed in float16 (to halve the disk) is read by any run,
always returned as float32.
Every file records its key in its metadata and is checked on read; an unreadable or mismatching file
is treated as a miss and rewritten. Writes go to a temporary file in the same folder which is then
renamed over the entry (`os.replace`), so no reader ever sees a partial file.

Content hashes are memoised per process by (path, size, mtime_ns, ctime_ns, inode); ctime cannot be
set back by tools that preserve mtimes, so an edited file is re-hashed.

CLI: precompute the features of every media file of a dataset laid out as docs/DATA.md says,

    python -m data.features --data_root DIR --preset tiny --cache_dir D \
        [--modalities audio,image,video] [--dtype float16] [--skip_bad]

prints computed / reused / failed counts per modality; a file that cannot be used is reported by
name with its reason and makes the exit code non-zero, unless `--skip_bad` is given (then it is
counted as skipped and reported). Under `torchrun --nproc_per_node N -m data.features ...` each
process encodes whole batches of the sorted file list round robin into the shared cache (entries
are written atomically; existing ones are reused, so an interrupted run resumes); rank 0 prints the
totals. Every run writes `<cache_dir>/run.json` (world size, files per process; docs/SHARDING.md).
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping, Optional, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from util.atomic import atomic_path
from util.dtypes import resolve_dtype
from util.hashing import sha256_file, sha256_json, stable_json
from util.shard import Group, Launch, ShardError, write_run_record

if TYPE_CHECKING:  # decoding libraries are imported when a file is first loaded
    from data.media import VideoSampling

log = logging.getLogger(__name__)

FORMAT = "m2ugen-features/1"
TENSOR = "features"
StorageDtype = Literal["float16", "float32"]
STORAGE_DTYPES: tuple[str, ...] = ("float16", "float32")  # names of util.dtypes

MEDIA_DIRS = {"audio": "audios", "image": "images", "video": "videos"}
MEDIA_EXTS = {
    "audio": {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"},
    "image": {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"},
    "video": {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v"},
}

DEFAULT_MEMO_BYTES = 64 * 2**20  # RAM kept for recently used media features (per model)


class _Store:
    """Safetensors entries addressed by key under one namespace folder."""

    def __init__(self, root: Path, dtype: StorageDtype) -> None:
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"cache dtype must be one of {list(STORAGE_DTYPES)}, got {dtype!r}")
        self.root = root
        self.dtype = dtype

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def _valid_meta(self, f: Any, key: str, p: Path) -> bool:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or meta.get("key") != key:
            log.warning("feature cache: %s does not hold entry %s; recomputing", p, key)
            return False
        return True

    def contains(self, key: str) -> bool:
        """True if a complete, matching entry exists (reads the header only)."""
        p = self.path(key)
        if not p.is_file():
            return False
        try:
            with safe_open(str(p), framework="pt") as f:
                return self._valid_meta(f, key, p) and TENSOR in f.keys()
        except (SafetensorError, OSError) as e:
            log.warning("feature cache: unreadable entry %s (%s); recomputing", p, e)
            return False

    def read(self, key: str) -> Optional[torch.Tensor]:
        """The stored tensor as float32, or None (absent, unreadable or mismatching entry)."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with safe_open(str(p), framework="pt") as f:
                if not self._valid_meta(f, key, p):
                    return None
                return f.get_tensor(TENSOR).float()
        except (SafetensorError, OSError) as e:
            log.warning("feature cache: unreadable entry %s (%s); recomputing", p, e)
            return None

    def write(self, key: str, tensor: torch.Tensor, meta: Mapping[str, str]) -> torch.Tensor:
        """Store atomically; returns exactly what a later `read` will give (float32)."""
        stored = tensor.detach().to("cpu", resolve_dtype(self.dtype)).contiguous()
        if not torch.isfinite(stored).all():
            raise ValueError(f"refusing to cache non-finite features for {meta.get('source', key)}"
                             f" (dtype {self.dtype})")
        metadata = {"format": FORMAT, "key": key, "dtype": self.dtype, **meta}
        with atomic_path(self.path(key)) as tmp:
            save_file({TENSOR: stored}, str(tmp), metadata=metadata)
        return stored.float()


@dataclass
class CacheStats:
    computed: int = 0
    reused: int = 0


class FeatureCache:
    """Frozen-encoder features per media file (see the module docstring for keys and layout)."""

    def __init__(self, cache_dir: str | os.PathLike, dtype: StorageDtype = "float32") -> None:
        self.cache_dir = Path(cache_dir)
        self.store = _Store(self.cache_dir / "media", dtype)
        self.dtype = dtype
        self.stats = CacheStats()
        self._hashes: dict[str, tuple[tuple[int, ...], str]] = {}

    def content_hash(self, path: str | os.PathLike) -> str:
        """sha256 of the file's bytes (memoised while size/mtime/ctime/inode are unchanged)."""
        p = os.path.realpath(path)
        st = os.stat(p)
        sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        memo = self._hashes.get(p)
        if memo is not None and memo[0] == sig:
            return memo[1]
        digest = sha256_file(p)
        self._hashes[p] = (sig, digest)
        return digest

    def key(self, path: str | os.PathLike, identity: str,
            params: Optional[Mapping[str, Any]] = None) -> str:
        """Entry key of `path` for an encoder identity and loader parameters."""
        return sha256_json({
            "kind": "media", "content": self.content_hash(path), "encoder": identity,
            "params": dict(params or {}),
        })

    def lookup(self, path: str | os.PathLike, identity: str,
               params: Optional[Mapping[str, Any]] = None) -> Optional[torch.Tensor]:
        return self.store.read(self.key(path, identity, params))

    def put(self, path: str | os.PathLike, identity: str, features: torch.Tensor,
            params: Optional[Mapping[str, Any]] = None) -> torch.Tensor:
        key = self.key(path, identity, params)
        return self.store.write(key, features, {
            "source": str(path), "identity": identity, "params": stable_json(dict(params or {})),
            "content_sha256": self.content_hash(path),
        })

    def get_or_compute(
        self,
        paths: Sequence[str | os.PathLike],
        encoder: Any,
        loader: Callable[[str], Any],
        *,
        params: Optional[Mapping[str, Any]] = None,
        batch_size: int = 8,
    ) -> list[torch.Tensor]:
        """Per-path features (float32, CPU; `encoder.collate` batches them): cached ones are read,
        the others are loaded with `loader(path)`, encoded with `encoder.encode_items` in batches
        of `batch_size`, and stored. `params` must describe everything `loader` does that changes
        the result (sample rate, frame count, ...). Loader/encoder errors propagate."""
        identity = encoder.identity
        out: list[Optional[torch.Tensor]] = [None] * len(paths)
        todo: list[int] = []
        for i, p in enumerate(paths):
            out[i] = self.lookup(p, identity, params)
            if out[i] is None:
                todo.append(i)
            else:
                self.stats.reused += 1
        for s in range(0, len(todo), max(1, batch_size)):
            chunk = todo[s: s + batch_size]
            items = encoder.encode_items([loader(str(paths[i])) for i in chunk])
            for i, feats in zip(chunk, items):
                out[i] = self.put(paths[i], identity, feats, params)
                self.stats.computed += 1
        return [t for t in out if t is not None]

    def loader(self, encoder: Any, raw: Callable[[str], Any],
               params: Optional[Mapping[str, Any]] = None) -> Callable[[str], torch.Tensor]:
        """A `path -> features` callback for one modality (what a dataset's loader can return)."""
        return lambda path: self.get_or_compute([path], encoder, raw, params=params)[0]


class TextFeatureStore:
    """Decoder targets (any text -> tensor function of a frozen model), keyed by text + identity."""

    def __init__(self, cache_dir: str | os.PathLike, identity: str,
                 dtype: StorageDtype = "float32") -> None:
        if not identity:
            raise ValueError("a text feature store needs the producing model's identity")
        self.store = _Store(Path(cache_dir) / "text", dtype)
        self.identity = identity
        self.dtype = dtype
        self.stats = CacheStats()

    def key(self, text: str) -> str:
        return sha256_json({"kind": "text", "text": text, "model": self.identity})

    def lookup(self, text: str) -> Optional[torch.Tensor]:
        return self.store.read(self.key(text))

    def put(self, text: str, tensor: torch.Tensor) -> torch.Tensor:
        return self.store.write(self.key(text), tensor, {"text": text, "identity": self.identity})

    def get_or_compute(self, texts: Sequence[str], compute: Callable[[list[str]], torch.Tensor],
                       batch_size: int = 16) -> torch.Tensor:
        """(B, ...) float32: cached rows read, missing ones computed by `compute(texts)` (one row
        per text) in batches and stored."""
        rows: list[Optional[torch.Tensor]] = [self.lookup(t) for t in texts]
        todo = [i for i, r in enumerate(rows) if r is None]
        self.stats.reused += len(texts) - len(todo)
        for s in range(0, len(todo), max(1, batch_size)):
            chunk = todo[s: s + batch_size]
            values = compute([texts[i] for i in chunk])
            if values.shape[0] != len(chunk):
                raise ValueError(f"compute returned {values.shape[0]} rows for {len(chunk)} texts")
            for i, v in zip(chunk, values):
                rows[i] = self.put(texts[i], v)
                self.stats.computed += 1
        return torch.stack([r for r in rows if r is not None])


class MediaFeatures:
    """Media items -> per-item frozen-encoder features, for serving and training.

    A path is decoded with the encoder's own preprocessing parameters, encoded (or read from the
    optional disk cache), and the result is memoised in RAM under a byte budget (least recently
    used entries are dropped first; an item larger than the budget is simply not memoised).
    Decoded arrays pass through unchanged: the model encodes them itself. This keeps file I/O out
    of the model package while every caller shares one path -> features route.
    `video_sampling` (`data.media.VideoSampling`; default uniform) is fixed per instance: the RAM
    memo and the disk cache keys hold one sampling's features.
    `pool_music` (serving, no disk cache): music is reduced window by window to what the model's
    frozen music bridge needs (`MusicBridge.reduction()`: one pooled vector per clip), so a long
    clip never holds all MERT states of all its frames (docs/MEMORY.md). Training keeps it off:
    its bridges learn from every state.
    """

    def __init__(self, model: Any, cache_dir: Optional[str | os.PathLike] = None, *,
                 cache_dtype: StorageDtype = "float32",
                 memo_bytes: int = DEFAULT_MEMO_BYTES,
                 video_sampling: Optional["VideoSampling"] = None,
                 pool_music: bool = False) -> None:
        if memo_bytes < 0:
            raise ValueError(f"memo_bytes must be >= 0, got {memo_bytes}")
        self.model = model
        self.pool_music = pool_music and not cache_dir  # a cache entry holds the whole stack
        self.video_sampling = video_sampling
        self.cache = FeatureCache(cache_dir, cache_dtype) if cache_dir else None
        self.memo_bytes = memo_bytes
        self._memo: collections.OrderedDict[tuple, torch.Tensor] = collections.OrderedDict()
        self._memo_used = 0

    @property
    def memo_used_bytes(self) -> int:
        return self._memo_used

    def item_features(self, modality: str, item: Any) -> Any:
        """Features (torch.Tensor) of a media path; anything else is returned unchanged."""
        if not isinstance(item, (str, os.PathLike)):
            return item
        st = os.stat(item)
        key = (modality, os.path.realpath(item), st.st_size, st.st_mtime_ns)  # edits miss
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        feats = self._compute(modality, str(item))
        self._remember(key, feats)
        return feats

    def features(self, media: Mapping[str, Any]) -> dict[str, Any]:
        """`item_features` for each present modality of a {modality: item} mapping."""
        return {m: self.item_features(m, v) for m, v in media.items() if v is not None}

    def loader(self, modality: str) -> Callable[[str], torch.Tensor]:
        """A `path -> features` callback (what a training dataset's media loader returns)."""
        return lambda path: self.item_features(modality, path)

    def forget(self, paths: Iterable[str | os.PathLike]) -> int:
        """Drop the memo entries of these files (e.g. a demo session's uploads, deleted with it);
        returns how many entries went."""
        real = {os.path.realpath(p) for p in paths}
        keys = [k for k in self._memo if k[1] in real]
        for key in keys:
            dropped = self._memo.pop(key)
            self._memo_used -= dropped.numel() * dropped.element_size()
        return len(keys)

    def _compute(self, modality: str, path: str) -> torch.Tensor:
        encoder = self.model.encoder(modality)
        raw, params = media_loader_for(self.model.cfg, modality, self.video_sampling)
        if self.cache is not None:
            feats = self.cache.get_or_compute([path], encoder, raw, params=params)[0]
        elif modality == "audio" and self.pool_music:
            with torch.no_grad():  # the bridge's reduction, as in inference (frozen weights)
                reduction = self.model.bridges["audio"].reduction()
            feats = encoder.encode_items([raw(path)], reduction=reduction)[0]
        else:
            feats = encoder.encode_items([raw(path)])[0]
        return feats.float().cpu()

    def _remember(self, key: tuple, feats: torch.Tensor) -> None:
        size = feats.numel() * feats.element_size()
        if size > self.memo_bytes:
            return
        self._memo[key] = feats
        self._memo_used += size
        while self._memo_used > self.memo_bytes:
            _, dropped = self._memo.popitem(last=False)  # least recently used
            self._memo_used -= dropped.numel() * dropped.element_size()


# ---------------------------------------------------------------------------------------------
# CLI: precompute a dataset's features


def discover_media(data_root: str | os.PathLike, modality: str) -> list[Path]:
    """Every media file of `modality` in the dataset folders (<root>/<set>/audios|images|videos)."""
    root = Path(data_root)
    folder, exts = MEDIA_DIRS[modality], MEDIA_EXTS[modality]
    found = {p.resolve(): p for p in root.glob(f"*/{folder}/*")
             if p.is_file() and p.suffix.lower() in exts}
    return sorted(found.values())


@dataclass
class Report:
    modality: str
    total: int = 0
    computed: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def media_loader_for(cfg: Any, modality: str, video_sampling: Optional["VideoSampling"] = None
                     ) -> tuple[Callable[[str], Any], dict[str, Any]]:
    """The raw loader for a modality and the parameters that define its output (for the key);
    `video_sampling` (`data.media.VideoSampling`, default uniform) chooses the video frames."""
    from data import media

    if modality == "audio":
        sr = cfg.mert.sample_rate
        return (lambda p: media.load_audio(p, sr)), {"loader": "load_audio", "sr": sr}
    if modality == "image":
        return media.load_image, {"loader": "load_image"}
    n, sampling = cfg.vivit.num_frames, video_sampling or media.VideoSampling()
    return ((lambda p: sampling.load(p, n)),
            {"loader": "load_video", "num_frames": n, **sampling.cache_params()})


def load_encoder(cfg: Any, modality: str, device: str) -> Any:
    """The frozen encoder of `modality` named by the configuration `cfg`."""
    from llama import encoders

    fn, enc_cfg = {
        "audio": (encoders.load_music_encoder, cfg.mert),
        "image": (encoders.load_image_encoder, cfg.vit),
        "video": (encoders.load_video_encoder, cfg.vivit),
    }[modality]
    return fn(enc_cfg, device=device)


def precompute(cache: FeatureCache, files: Sequence[Path], encoder: Any,
               loader: Callable[[str], Any], params: Mapping[str, Any], modality: str,
               batch_size: int = 8, progress: bool = True,
               blocks: Optional[Sequence[int]] = None) -> Report:
    """Fill the cache for `files`; unusable files are recorded (name + reason), never dropped
    silently. Only errors that mean "this file cannot be used" are caught: the media loader's
    `MediaError`, an unreadable file (OSError) and the encoder's input checks (ValueError).
    `blocks[i]`: the batch of the whole file list that files[i] belongs to; no encoder batch
    spans two, so a process of a sharded run batches its files exactly as one process would."""
    from tqdm import tqdm

    from data.media import MediaError

    rep = Report(modality, total=len(files))
    pending: list[tuple[Path, Any]] = []

    def flush() -> None:
        if not pending:
            return
        try:
            items = encoder.encode_items([m for _, m in pending])
            done = list(zip(pending, items))
        except ValueError:  # find the culprit(s): encode one by one
            done = []
            for path, m in pending:
                try:
                    done.append(((path, m), encoder.encode_items([m])[0]))
                except ValueError as e:
                    rep.failed.append((str(path), f"encoder rejected it: {e}"))
        for (path, _), feats in done:
            try:
                cache.put(path, encoder.identity, feats, params)
            except ValueError as e:  # e.g. non-finite features
                rep.failed.append((str(path), str(e)))
                continue
            rep.computed += 1
        pending.clear()

    for i, path in enumerate(tqdm(files, desc=f"{modality} features", unit="file",
                                  disable=not progress)):
        if blocks is not None and i and blocks[i] != blocks[i - 1]:
            flush()
        try:
            if cache.store.contains(cache.key(path, encoder.identity, params)):
                rep.reused += 1
                continue
            pending.append((path, loader(str(path))))
        except MediaError as e:
            rep.failed.append((str(path), e.reason))
            continue
        except OSError as e:
            rep.failed.append((str(path), f"cannot read file: {e}"))
            continue
        if len(pending) >= batch_size:
            flush()
    flush()
    return rep


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data.features", description=__doc__.split("\n")[0])
    ap.add_argument("--data_root", required=True,
                    help="dataset folder (layout of docs/DATA.md)")
    ap.add_argument("--preset", default="tiny", help="configuration preset naming the encoders")
    ap.add_argument("--cache_dir", required=True)
    ap.add_argument("--modalities", default="audio,image,video")
    ap.add_argument("--dtype", choices=STORAGE_DTYPES, default="float32", help="storage dtype")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip_bad", action="store_true",
                    help="count and report unusable files instead of failing the run")
    ap.add_argument("--no_progress", action="store_true")
    args = ap.parse_args(argv)

    from llama.config import get_preset

    root = Path(args.data_root)
    if not root.is_dir():
        ap.error(f"--data_root {str(root)!r} is not a folder")
    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    unknown = [m for m in modalities if m not in MEDIA_DIRS]
    if unknown or not modalities:
        ap.error(f"--modalities: unknown {unknown}; choose from {', '.join(MEDIA_DIRS)}")
    if args.batch_size < 1:
        ap.error("--batch_size must be >= 1")
    try:
        launch = Launch.from_env()
    except ShardError as err:
        ap.error(str(err))
    cfg = get_preset(args.preset)
    cache = FeatureCache(args.cache_dir, dtype=args.dtype)
    device = launch.device(args.device) if launch.sharded else args.device
    with Group(launch) as group:
        reports, handled = [], 0
        for modality in modalities:
            files = discover_media(root, modality)
            # whole encoder batches round robin: every batch is the one a single process makes
            mine = [i for i in range(len(files))
                    if (i // args.batch_size) % launch.world_size == launch.rank]
            handled += len(mine)
            if not mine:
                reports.append(Report(modality))
                continue
            encoder = load_encoder(cfg, modality, device)
            loader, params = media_loader_for(cfg, modality)
            reports.append(precompute(cache, [files[i] for i in mine], encoder, loader, params,
                                      modality, args.batch_size,
                                      progress=not args.no_progress and launch.is_main,
                                      blocks=[i // args.batch_size for i in mine]))
        group.barrier()
        everyone = group.gather((reports, handled))
    if not launch.is_main:
        return 1 if any(r.failed for rs, _ in everyone for r in rs) and not args.skip_bad else 0
    reports = [_sum_reports([rs[k] for rs, _ in everyone]) for k in range(len(modalities))]
    write_run_record(args.cache_dir, launch, [n for _, n in everyone],
                     files={r.modality: r.total for r in reports})

    n_failed = 0
    for r in reports:
        if not r.total:
            print(f"{r.modality}: no media files under {root}/*/{MEDIA_DIRS[r.modality]}/")
            continue
        word = "skipped" if args.skip_bad else "failed"
        print(f"{r.modality}: {r.total} files, {r.computed} computed, {r.reused} reused, "
              f"{len(r.failed)} {word}")
        for path, reason in r.failed:
            print(f"  {word}: {path}: {reason}")
        n_failed += len(r.failed)
    if n_failed and not args.skip_bad:
        print(f"{n_failed} file(s) could not be used (pass --skip_bad to skip them)",
              file=sys.stderr)
        return 1
    return 0


def _sum_reports(parts: Sequence[Report]) -> Report:
    """One modality's report over the processes of a sharded run (failures in file order)."""
    out = Report(parts[0].modality)
    for r in parts:
        out.total += r.total
        out.computed += r.computed
        out.reused += r.reused
        out.failed += r.failed
    out.failed.sort()
    return out


if __name__ == "__main__":
    sys.exit(main())
