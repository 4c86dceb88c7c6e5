"""The `score` verb of the music-generation evaluations: FAD, KL, CLAP and (image/video) relevance
of one or more systems' generated music against the reference rows, as one JSON document.

Each metric runs only when its model is given (offline: local folders or cached hub ids); the
JSON names every model used and says, in `not_computed`, why a metric is null. Several
`--predictions` are several systems: relevance ranks compare them per row, as the paper's
ImageBind ranking did. Reference-side numbers are computed once and shared by all systems.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from Evaluation._common import EvalInputError, fail, print_json
from Evaluation.music_rows import SHOW, MusicRow, TaskSpec, load_predictions

KL_SECONDS = 10.0  # the published KL looked at the first 10 s of each clip
RESAMPLER = "soxr HQ (python-soxr, data.media.load_audio), channels averaged"

DEFINITIONS = {
    "fad": "Frechet distance between Gaussians fitted to the embeddings of all reference clips "
           "and of the system's clips (vggish: fad-pytorch's published framing, one 16.4 s "
           "window per clip (audio_inputs.fad.crop: random = fad-pytorch's seeded random "
           "position with silent windows redrawn, first = the first 16.4 s) cut into 10 "
           "chunks of 1.64 s, pre-ReLU, no PCA; clap/encodec: one embedding per clip / per "
           "latent frame)",
    "fad_inf": "fadtk's FAD-inf: FAD of n embeddings drawn with replacement from the system's "
               "set (n = 25 values from 500 to the set size, seeded) against the full reference "
               "set, extrapolated to n = infinity by a least-squares line in 1/n (value = its "
               "intercept; slope and r2 of the fit reported)",
    "fad_crop": "what the random crop did per set: files longer than the window, silent windows "
                "redrawn in the same file, silent windows replaced by another file's",
    "kl": "mean over rows of KL(p_reference || p_generated), p = softmax of the AudioSet "
          "classifier's logits on the first 10 s (passt: the paper's PaSST; ast: AST), torch "
          "kl_div((p_gen + 1e-6).log(), p_ref)",
    "clap": "mean over rows of the cosine between the CLAP audio embedding of the generated clip "
            "and the CLAP text embedding of the row's target caption",
    "references_clap": "the same CLAP score of the reference music itself (what a perfect "
                       "system scores on this set)",
    "relevance.similarity": "mean over rows of the cosine between the input's relevance "
                            "embedding and the generated clip's",
    "relevance.mrr": "per row, the systems ranked by that similarity (1 = most relevant, ties "
                     "share the mean rank), mean of 1 / rank over the rows every system has",
    "relevance.mean_rank": "mean rank over the same rows",
    "baselines.source": "editing only: the unedited source music scored as if it were the "
                        "system's output (a model that ignores the instruction)",
}


@dataclass
class Scorers:
    """The models each metric uses (None: that metric is not computed, `why` says why)."""

    fad: Any = None
    fad_kind: str = "vggish"
    fad_crop: str = "random"
    fad_seed: int = 0
    kl: Any = None
    clap: Any = None
    relevance: Any = None
    why: dict[str, str] = field(default_factory=dict)

    def identities(self) -> dict[str, Optional[str]]:
        return {k: getattr(getattr(self, k), "identity", None)
                for k in ("fad", "kl", "clap", "relevance")}


def add_score_parser(sub, spec: TaskSpec) -> argparse.ArgumentParser:
    s = sub.add_parser("score", help="score generated music against the references (prints JSON)")
    s.add_argument("--predictions", nargs="+", required=True,
                   help="manifest(s) written by generate, or folders of audio files named after "
                        "the reference music; several = several systems (ranked for relevance)")
    s.add_argument("--references", required=True)
    s.add_argument("--target_dir", required=True, help="folder of the reference music")
    s.add_argument("--media_dir", default=None,
                   help="folder of the inputs (needed for relevance; editing: the source baseline)")
    s.add_argument("--fad_model", default="vggish", choices=("vggish", "clap", "encodec"),
                   help="FAD embedding model (paper: vggish)")
    s.add_argument("--fad_weights", default=None,
                   help="vggish: torchvggish state dict (vggish-10086976.pth); clap/encodec: "
                        "folder or hub id. Omitted: no FAD")
    s.add_argument("--fad_crop", default="random", choices=("random", "first"),
                   help="vggish: which 16.4 s window of each clip FAD reads. random (default): "
                        "fad-pytorch's seeded random position, silent windows redrawn, as the "
                        "published run did; first: the first 16.4 s")
    s.add_argument("--fad_seed", type=int, default=0,
                   help="seed of the random FAD crop and of FAD-inf's sampling")
    s.add_argument("--kl_model", default=None,
                   help="AudioSet classifier: passt (the paper's; needs --kl_weights) or an "
                        "ASTForAudioClassification folder or hub id (e.g. MIT/ast-finetuned-"
                        "audioset-10-10-0.4593; not comparable). Omitted: no KL")
    s.add_argument("--kl_weights", default=None,
                   help="--kl_model passt: the PaSST checkpoint file (passt-s-f128-p16-s10-"
                        "ap.476-swa.pt, as hear21passt's get_basic_model loads; .pt or "
                        ".safetensors)")
    s.add_argument("--clap_model", default=None,
                   help="ClapModel folder or hub id (paper: laion/clap-htsat-unfused). "
                        "Omitted: no CLAP")
    if spec.modality in ("image", "video"):
        s.add_argument("--relevance_model", default="auto",
                       choices=("auto", "imagebind", "caption_clap"),
                       help="imagebind: the paper's model (needs --imagebind_weights); "
                            "caption_clap: the labelled fallback (needs --captioner and "
                            "--clap_model); auto: imagebind when weights are given, else the "
                            "fallback when a captioner is given")
        s.add_argument("--imagebind_weights", default=None,
                       help="imagebind_huge.pth from facebookresearch/ImageBind (CC-BY-NC 4.0, "
                            "non-commercial; loaded strictly, never downloaded)")
        s.add_argument("--captioner", default=None,
                       help="relevance FALLBACK, not comparable with the paper: a BLIP "
                            "captioning folder or hub id (e.g. Salesforce/blip-image-captioning-"
                            "base); the caption is compared with the music by --clap_model")
        s.add_argument("--video_frames", type=int, default=3,
                       help="frames captioned per video (uniformly spaced; 1 = the middle)")
    s.add_argument("--allow_missing", action="store_true",
                   help="score the rows that have audio instead of failing")
    s.add_argument("--batch_size", type=int, default=8)
    s.add_argument("--device", default="cpu")
    s.set_defaults(run=lambda a: score_main(spec, a))
    return s


def load_scorers(spec: TaskSpec, args: argparse.Namespace) -> Scorers:
    from Evaluation import models as M

    sc = Scorers(fad_kind=args.fad_model, fad_crop=getattr(args, "fad_crop", "random"),
                 fad_seed=getattr(args, "fad_seed", 0))
    if args.fad_weights:
        sc.fad = M.load_embedder(args.fad_model, args.fad_weights, args.device)
    else:
        sc.why["fad"] = "no --fad_weights given"
    kl_weights = getattr(args, "kl_weights", None)
    if args.kl_model == "passt":
        if not kl_weights:
            raise EvalInputError("--kl_model passt needs --kl_weights (the PaSST checkpoint, "
                                 "passt-s-f128-p16-s10-ap.476-swa.pt)")
        from Evaluation.metrics.passt import PasstClassifier

        sc.kl = PasstClassifier(kl_weights, args.device, max_seconds=KL_SECONDS)
    elif kl_weights:
        raise EvalInputError("--kl_weights is the PaSST checkpoint: use it with --kl_model passt")
    elif args.kl_model:
        sc.kl = M.ASTClassifier(args.kl_model, args.device, max_seconds=KL_SECONDS)
    else:
        sc.why["kl"] = "no --kl_model given"
    if args.clap_model:
        sc.clap = M.ClapEmbedder(args.clap_model, args.device)
    else:
        sc.why["clap"] = "no --clap_model given"
    if spec.modality in ("image", "video"):
        _load_relevance(sc, args)
    else:
        sc.why["relevance"] = f"not defined for {spec.name}"
    return sc


def _load_relevance(sc: Scorers, args: argparse.Namespace) -> None:
    """ImageBind (the paper's model) or the labelled caption + CLAP fallback, per
    --relevance_model; a model asked for explicitly without its inputs is an error."""
    choice = getattr(args, "relevance_model", "auto")
    weights = getattr(args, "imagebind_weights", None)
    captioner = getattr(args, "captioner", None)
    if choice == "auto":
        choice = "imagebind" if weights else "caption_clap" if captioner else None
    if choice == "imagebind":
        if not weights or not args.media_dir:
            raise EvalInputError("--relevance_model imagebind needs --imagebind_weights "
                                 "(imagebind_huge.pth) and --media_dir")
        from Evaluation.imagebind import ImageBindRelevance

        sc.relevance = ImageBindRelevance(weights, args.device, batch_size=args.batch_size)
    elif choice == "caption_clap" and captioner and sc.clap is not None and args.media_dir:
        from Evaluation.relevance import CaptionClapRelevance

        sc.relevance = CaptionClapRelevance(captioner, sc.clap, args.device,
                                            video_frames=args.video_frames)
    elif choice == "caption_clap":
        raise EvalInputError("--relevance_model caption_clap needs --captioner, --clap_model "
                             "and --media_dir")
    else:
        sc.why["relevance"] = ("needs --imagebind_weights (the paper's ImageBind) or "
                               "--captioner with --clap_model (fallback), and --media_dir")


class Features:
    """Per-file model outputs, computed once per (metric, file) and shared by all systems."""

    def __init__(self, sc: Scorers, batch_size: int) -> None:
        self.sc, self.batch = sc, max(1, batch_size)
        self._memo: dict[tuple[str, str], np.ndarray] = {}

    def _many(self, kind: str, paths: Sequence[Path], sr: int,
              fn: Callable[[list[np.ndarray]], np.ndarray], max_seconds: Optional[float] = None
              ) -> list[np.ndarray]:
        from data.media import load_audio

        todo = [p for p in dict.fromkeys(map(str, paths)) if (kind, p) not in self._memo]
        for i in range(0, len(todo), self.batch):
            chunk = todo[i:i + self.batch]
            out = fn([load_audio(p, sr, max_seconds=max_seconds) for p in chunk])
            for p, o in zip(chunk, out):
                self._memo[(kind, p)] = o
        return [self._memo[(kind, str(p))] for p in paths]

    def fad(self, paths: Sequence[Path]) -> tuple[np.ndarray, Optional[dict]]:
        """(embeddings of one set, what its crop did): vggish reads one 16.4 s window per clip
        in 10 chunks (published framing); clap / encodec embed whole clips."""
        from data.media import load_audio
        from Evaluation.metrics.audio import fixed_chunks
        from Evaluation.metrics.fad import CropCounts, fad_windows

        emb = self.sc.fad
        if self.sc.fad_kind != "vggish":
            def fn(waves):
                return [np.atleast_2d(emb.embed(w)) for w in waves]
            return np.concatenate(self._many("fad", paths, emb.sample_rate, fn, None)), None
        counts = CropCounts()
        windows = fad_windows(len(paths), lambda i: load_audio(paths[i], emb.sample_rate,
                                                               max_seconds=None),
                              self.sc.fad_crop, np.random.default_rng(self.sc.fad_seed), counts)
        out = [emb.embed(c) for w in windows for c in fixed_chunks(w)]
        return np.concatenate(out), counts.as_dict()

    def probs(self, paths: Sequence[Path]) -> np.ndarray:
        kl = self.sc.kl
        return np.stack(self._many("kl", paths, kl.sample_rate, kl.probs, None))

    def clap_audio(self, paths: Sequence[Path]) -> np.ndarray:
        from util.seed import seeded

        clap = self.sc.clap

        def fn(waves):
            with seeded(0):  # CLAP's rand_trunc crops clips over 10 s at random: fix the crop
                return clap.audio(waves)
        return np.stack(self._many("clap", paths, clap.sample_rate, fn, None))

    def relevance_audio(self, paths: Sequence[Path]) -> np.ndarray:
        """The music side of relevance: CLAP audio embeddings for the fallback, the relevance
        model's own audio embeddings otherwise (ImageBind at 16 kHz)."""
        rel = self.sc.relevance
        kind = getattr(rel, "audio_kind", "clap")
        if kind == "clap":
            return self.clap_audio(paths)
        return np.stack(self._many(kind, paths, rel.sample_rate, rel.audio, None))


def _system_names(paths: Sequence[str]) -> list[str]:
    names = [Path(p).stem if Path(p).suffix == ".json" else Path(p).name for p in paths]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise EvalInputError(f"two --predictions share the name {dup[0]!r}: rename one of them")
    return names


def _present(rows: list[MusicRow], items: dict[str, Optional[Path]], where: str,
             allow_missing: bool) -> tuple[list[MusicRow], list[Path], int]:
    """Rows with a generated file (in reference order), their files, and how many lack one."""
    scored, files, missing = [], [], []
    for r in rows:
        f = items.get(r.key)
        if f is not None and Path(f).is_file():
            scored.append(r)
            files.append(Path(f))
        else:
            missing.append(r.key)
    if missing and not allow_missing:
        raise EvalInputError(f"{len(missing)} of {len(rows)} reference rows have no generated "
                             f"audio in {where} (first: {', '.join(missing[:SHOW])}); pass "
                             "--allow_missing to score the rest")
    if not scored:
        raise EvalInputError(f"no reference row has generated audio in {where}")
    return scored, files, len(missing)


def _fad_inf(ctx: "Context", emb: np.ndarray) -> Optional[dict]:
    from Evaluation.metrics.fad import fad_inf

    try:
        return fad_inf(ctx.reference_fad(), emb, seed=ctx.sc.fad_seed)
    except ValueError as exc:  # e.g. exactly 500 embeddings: no spread of n to fit a line on
        ctx.sc.why["fad_inf"] = str(exc)
        return None


def score_system(rows: list[MusicRow], files: list[Path], ctx: "Context") -> dict:
    """FAD / KL / CLAP (and relevance similarities, kept for ranking) of one system."""
    from Evaluation.metrics import audio as A

    sc, feats = ctx.sc, ctx.feats
    out: dict[str, Any] = {"fad": None, "fad_inf": None, "fad_crop": None, "kl": None,
                           "clap": None}
    if sc.fad is not None:
        emb, out["fad_crop"] = feats.fad(files)
        out["fad"] = A.fad(ctx.reference_fad(), emb)
        out["fad_inf"] = _fad_inf(ctx, emb)
    if sc.kl is not None:
        targets = [ctx.target_dir / r.target for r in rows]
        out["kl"] = A.kl_target_generated(feats.probs(targets), feats.probs(files))
    sims = None
    if sc.clap is not None:
        out["clap"] = A.clap_score(feats.clap_audio(files), ctx.caption_emb(rows))
    if sc.relevance is not None:
        sims = sc.relevance.similarity(ctx.media_emb(rows), feats.relevance_audio(files))
    return {**out, "_sims": sims}


@dataclass
class Context:
    """Reference-side state of one scoring run."""

    spec: TaskSpec
    rows: list[MusicRow]
    target_dir: Path
    media_dir: Optional[Path]
    sc: Scorers
    feats: Features
    _ref_fad: Optional[np.ndarray] = None
    _captions: dict[str, np.ndarray] = field(default_factory=dict)
    _media: dict[str, np.ndarray] = field(default_factory=dict)
    reference_fad_crop: Optional[dict] = None

    def reference_fad(self) -> np.ndarray:
        if self._ref_fad is None:
            targets = list(dict.fromkeys(self.target_dir / r.target for r in self.rows))
            self._ref_fad, self.reference_fad_crop = self.feats.fad(targets)
        return self._ref_fad

    def caption_emb(self, rows: list[MusicRow]) -> np.ndarray:
        todo = [c for c in dict.fromkeys(r.caption for r in rows) if c not in self._captions]
        for i in range(0, len(todo), self.feats.batch):
            chunk = todo[i:i + self.feats.batch]
            self._captions.update(zip(chunk, self.sc.clap.text(chunk)))
        return np.stack([self._captions[r.caption] for r in rows])

    def media_emb(self, rows: list[MusicRow]) -> np.ndarray:
        assert self.media_dir is not None and self.spec.modality is not None
        todo = [r.media for r in rows if r.media not in self._media]
        todo = list(dict.fromkeys(todo))
        if todo:
            emb = self.sc.relevance.media_embeddings(
                self.spec.modality, [self.media_dir / m for m in todo])
            self._media.update(zip(todo, emb))
        return np.stack([self._media[r.media] for r in rows])


def _check_references(ctx: Context, refs: str) -> None:
    absent = sorted({r.target for r in ctx.rows if not (ctx.target_dir / r.target).is_file()})
    if absent and (ctx.sc.fad is not None or ctx.sc.kl is not None
                   or ctx.sc.clap is not None):
        raise EvalInputError(f"{len(absent)} reference music files named in {refs} are missing "
                             f"from {ctx.target_dir} (first: {', '.join(absent[:SHOW])})")
    if ctx.media_dir is not None and ctx.spec.modality is not None:
        gone = sorted({r.media for r in ctx.rows if not (ctx.media_dir / r.media).is_file()})
        if gone:
            raise EvalInputError(f"{len(gone)} inputs named in {refs} are missing from "
                                 f"{ctx.media_dir} (first: {', '.join(gone[:SHOW])})")


def _relevance(systems: dict[str, dict], scored: dict[str, list[MusicRow]]) -> None:
    """Fill each system's relevance block: its mean similarity, and ranks among the systems on
    the rows all of them have (a single system always ranks 1)."""
    from Evaluation.metrics.audio import relevance_ranks

    names = [n for n, s in systems.items() if s["_sims"] is not None]
    if not names:
        return
    per = {n: dict(zip((r.key for r in scored[n]), systems[n]["_sims"])) for n in names}
    common = [k for k in per[names[0]] if all(k in per[n] for n in names)]
    ranks = relevance_ranks(np.array([[per[n][k] for n in names] for k in common])) \
        if common else None
    for j, n in enumerate(names):
        systems[n]["relevance"] = {
            "similarity": float(np.mean(systems[n]["_sims"])),
            "mrr": None if ranks is None else float((1.0 / ranks[:, j]).mean()),
            "mean_rank": None if ranks is None else float(ranks[:, j].mean()),
            "rows_ranked": len(common), "systems_ranked": len(names),
        }


def comparable(spec: TaskSpec, sc: Scorers) -> dict[str, Any]:
    """Which numbers can be read against the paper's tables (and why not, when not)."""
    clap_id = sc.identities()["clap"] or ""
    return {
        # the published run: torchvggish weights through fad-pytorch's random crop
        "fad": sc.fad is not None and sc.fad_kind == "vggish" and sc.fad_crop == "random",
        "fad_inf": False,  # the paper reported no FAD-inf
        # the paper used PaSST-S (hear21passt); AST shares the labels, not the network
        "kl": bool(getattr(sc.kl, "is_published_architecture", False)),
        "clap": ("clap-htsat-unfused" in clap_id) and "clap" in spec.published,
        # the paper used ImageBind huge; the caption + CLAP fallback is a different model
        "relevance": (sc.relevance is not None
                      and str(sc.identities()["relevance"]).startswith("imagebind_huge:")),
        "notes": "fad: only with the torchvggish weights and --fad_crop random (first reads "
                 "the same window of every clip up to 16.4 s, but keeps silent windows); the "
                 "published run resampled with torchaudio's sinc filter, ours with soxr; kl: "
                 "only with --kl_model passt and the published PaSST-S checkpoint; clap: the "
                 "published loop overwrote "
                 "its sum and used dim=0, so the printed paper numbers are not what it meant; "
                 "relevance: the model and preprocessing only with --relevance_model imagebind "
                 "(the printed IM_RANK came from a broken loop and cannot be regenerated; ours "
                 "is the intended per-row rank); see docs/EVALUATION.md",
    }


def audio_inputs(sc: Scorers) -> dict[str, Optional[dict]]:
    """Per audio model: what it is, the rate audio is resampled to and how, what it reads."""
    from Evaluation.metrics.fad import FAD_SAMPLE_SIZE

    def entry(model: Any, **reads: Any) -> Optional[dict]:
        if model is None:
            return None
        return {"model": model.identity, "sample_rate": int(model.sample_rate),
                "resampler": RESAMPLER, **reads}

    fad_reads: dict[str, Any] = {"reads": "whole clip"}
    if sc.fad_kind == "vggish":
        fad_reads = {"reads": f"one {FAD_SAMPLE_SIZE}-sample window in 10 chunks",
                     "crop": sc.fad_crop, "seed": sc.fad_seed}
    return {"fad": entry(sc.fad, **fad_reads),
            "kl": entry(sc.kl, reads=f"first {KL_SECONDS:g} s"),
            "clap": entry(sc.clap, reads="whole clip (CLAP's seeded rand_trunc over 10 s)")}


def score(spec: TaskSpec, args: argparse.Namespace, sc: Optional[Scorers] = None) -> dict:
    """The JSON report of `score`; raises EvalInputError on missing rows / files."""
    rows = spec.load(args.references)
    names = _system_names(args.predictions)
    preds = {n: load_predictions(p) for n, p in zip(names, args.predictions)}
    sc = sc or load_scorers(spec, args)
    media_dir = Path(args.media_dir) if args.media_dir else None
    ctx = Context(spec, rows, Path(args.target_dir), media_dir, sc, Features(sc, args.batch_size))
    _check_references(ctx, args.references)
    systems: dict[str, dict] = {}
    scored: dict[str, list[MusicRow]] = {}
    for name, path in zip(names, args.predictions):
        r, files, missing = _present(rows, preds[name], path, args.allow_missing)
        scored[name] = r
        systems[name] = {"predictions": str(path), "rows_scored": len(r),
                         "rows_missing": missing, **score_system(r, files, ctx), "relevance": None}
    _relevance(systems, scored)
    for s in systems.values():
        s.pop("_sims")
    report: dict[str, Any] = {
        "task": spec.name, "references": str(args.references), "rows": len(rows),
        "models": sc.identities(), "audio_inputs": audio_inputs(sc),
        "reference_fad_crop": ctx.reference_fad_crop, "systems": systems,
        "references_clap": None if sc.clap is None else _reference_clap(ctx),
    }
    if spec.name == "editing":
        report["baselines"] = {"source": _source_baseline(ctx, args)}
    report.update({
        "not_computed": dict(sc.why), "published_metrics": list(spec.published),
        "comparable_with_paper": comparable(spec, sc), "definitions": DEFINITIONS,
    })
    return report


def _reference_clap(ctx: Context) -> float:
    from Evaluation.metrics.audio import clap_score

    audio = ctx.feats.clap_audio([ctx.target_dir / r.target for r in ctx.rows])
    return clap_score(audio, ctx.caption_emb(ctx.rows))


def _source_baseline(ctx: Context, args: argparse.Namespace) -> Optional[dict]:
    if ctx.media_dir is None:
        ctx.sc.why["baselines.source"] = "no --media_dir (the folder of the source music)"
        return None
    files = [ctx.media_dir / r.media for r in ctx.rows]
    gone = [str(f) for f in files if not f.is_file()]
    if gone:
        raise EvalInputError(f"{len(gone)} source music files are missing (first: "
                             f"{', '.join(gone[:SHOW])})")
    out = score_system(ctx.rows, files, ctx)
    out.pop("_sims")
    return out


def score_main(spec: TaskSpec, args: argparse.Namespace) -> int:
    from app.errors import one_line
    from data.media import MediaError

    try:
        report = score(spec, args)
    # model loaders raise OSError / ValueError for a bad folder or an uncached hub id; too few
    # clips for a FAD covariance is a ValueError naming the shape
    except (EvalInputError, MediaError, OSError, ValueError) as exc:
        return fail(one_line(exc))
    print_json(report)
    return 0
