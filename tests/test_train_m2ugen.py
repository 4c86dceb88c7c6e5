"""One training stage end to end on tiny synthetic data: resume, stage chaining, bad files."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import train_m2ugen
from llama import checkpoint as ckpt


def _run(data, out, cache, *extra):
    argv = ["--stage", "1", "--preset", "tiny", "--data_root", str(data), "--output_dir", str(out),
            "--epochs", "2", "--batch_size", "4", "--lr", "1e-3", "--warmup_epochs", "0.5",
            "--feature_cache", str(cache), "--seed", "3", *extra]
    return train_m2ugen.main(argv)


def test_killed_run_resumes_to_the_same_weights(small_synthetic, tmp_path):
    cache = tmp_path / "cache"
    crop = ("--audio_crop", "0.5")  # random crops too must replay exactly after a resume
    assert _run(small_synthetic, tmp_path / "full", cache, *crop) == 0
    assert _run(small_synthetic, tmp_path / "cut", cache, *crop, "--stop_after_steps", "4") == 0
    cut = ckpt.read_config(tmp_path / "cut")
    assert cut["step"] == 4 and not cut["complete"] and cut["batch_in_epoch"] > 0
    assert _run(small_synthetic, tmp_path / "cut", cache, *crop, "--resume") == 0
    full_w, cut_w = ckpt.read_weights(tmp_path / "full"), ckpt.read_weights(tmp_path / "cut")
    assert full_w.keys() == cut_w.keys()
    for name in full_w:
        torch.testing.assert_close(cut_w[name], full_w[name], rtol=1e-5, atol=1e-6, msg=name)
    # Only tuned parameters are stored: no frozen base weights, encoders or decoders.
    assert not any(n.startswith(("backbone.tok_embeddings", "backbone.output.")) for n in full_w)
    assert any(n.startswith("bridges.audio") for n in full_w)
    size = sum(t.numel() for t in full_w.values())
    assert size < 2_000_000
    # Training changed the stage-1 set and nothing else.
    assert ckpt.read_config(tmp_path / "full")["complete"]


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_audio_crop_outside_0_1_is_refused(small_synthetic, tmp_path, fraction, capsys):
    with pytest.raises(SystemExit) as exc:
        _run(small_synthetic, tmp_path / "out", tmp_path / "cache", "--audio_crop", fraction)
    assert exc.value.code == 2 and "--audio_crop" in capsys.readouterr().err


def test_next_stage_starts_from_previous_output(small_synthetic, tmp_path, capsys):
    """Stage 2 starts from stage 1's weights and keeps its LoRA shape and scaling (chosen by
    --lora_rank/--lora_alpha in stage 1, saved in config.json); a flag that disagrees is refused."""
    cache = tmp_path / "cache"
    lora = ("--lora_rank", "4", "--lora_alpha", "8")
    assert _run(small_synthetic, tmp_path / "s1", cache, "--epochs", "1", *lora) == 0
    s1 = ckpt.read_weights(tmp_path / "s1")
    saved = ckpt.read_config(tmp_path / "s1")["m2ugen"]["llama"]
    assert (saved["lora_rank"], saved["lora_alpha"]) == (4, 8.0)
    assert s1["backbone.layers.0.attention.lora_wq_l1.weight"].shape[0] == 4
    argv = ["--stage", "2", "--init_from", str(tmp_path / "s1"), "--data_root",
            str(small_synthetic), "--output_dir", str(tmp_path / "s2"), "--epochs", "1",
            "--batch_size", "4", "--feature_cache", str(cache)]
    with pytest.raises(SystemExit) as exc:
        train_m2ugen.main(argv + ["--lora_alpha", "4"])
    assert exc.value.code == 2 and "--lora_alpha 4.0 disagrees" in capsys.readouterr().err
    assert train_m2ugen.main(argv + ["--lora_rank", "4"]) == 0  # agreeing flags are fine
    assert ckpt.read_config(tmp_path / "s2")["m2ugen"]["llama"]["lora_alpha"] == 8.0
    s2 = ckpt.read_weights(tmp_path / "s2")
    # Bridges are frozen in stage 2: carried over unchanged from stage 1; the projector trained.
    bridge = next(n for n in s1 if n.startswith("bridges.audio"))
    assert torch.equal(s1[bridge], s2[bridge])
    proj = next(n for n in s1 if n.startswith("projector.") and n.endswith("weight"))
    assert not torch.equal(s1[proj], s2[proj])


@pytest.mark.slow
def test_unreadable_file_fails_naming_it_or_is_skipped_and_counted(small_synthetic, tmp_path,
                                                                  capsys):
    data = tmp_path / "data"
    shutil.copytree(small_synthetic, data)
    captions = json.loads((data / "MUCaps" / "MUCapsCaptions.json").read_text())
    train = set(json.loads((data / "split.json").read_text())["train"])
    victim = next(name for name in captions if f"MUCaps/audios/{name}" in train)
    (data / "MUCaps" / "audios" / victim).write_bytes(b"not a wav file at all")
    # one line naming the file, exit 2 (bad input), not a traceback
    assert _run(data, tmp_path / "strict", tmp_path / "cache", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert victim in err and "unreadable" in err and "Traceback" not in err
    assert _run(data, tmp_path / "skip", tmp_path / "cache", "--epochs", "1",
                "--on_error", "skip") == 0
    out = capsys.readouterr().out
    assert "1" in out and "unreadable" in out and victim in out


def test_launcher_world_size_without_a_group_is_refused(small_synthetic, tmp_path, monkeypatch):
    """A launcher said 2 processes but this one is alone (e.g. plain Accelerator() without CUDA
    under torchrun): no silent independent training."""
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(SystemExit, match="refusing to train alone"):
        _run(small_synthetic, tmp_path / "alone", tmp_path / "cache")
    assert not (tmp_path / "alone" / "checkpoint").exists()


def _compute_dtypes_and_log(data, out, cache, *extra) -> tuple[set, list[dict]]:
    """Train briefly, recording the dtype the backbone's attention and FFN blocks compute in."""
    from torch.nn.modules.module import register_module_forward_hook

    seen: set = set()

    def hook(module, inputs, output):
        if type(module).__name__ in ("Attention", "FeedForward"):
            seen.add(output.dtype)

    handle = register_module_forward_hook(hook)
    try:
        assert _run(data, out, cache, "--epochs", "1", "--batch_size", "5", "--log_every", "1",
                    "--data", "coco_captions=", "muvideo_captions=", *extra) == 0
    finally:
        handle.remove()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return seen, [entry for entry in log if "step" in entry]


@pytest.mark.slow
def test_mixed_precision_and_frozen_dtype_change_the_compute_dtype(small_synthetic, tmp_path):
    cache = tmp_path / "cache"
    runs = {
        "fp32": ((), torch.float32),
        "bf16": (("--mixed_precision", "bf16"), torch.bfloat16),
        "fp16": (("--mixed_precision", "fp16"), torch.float16),
        "frozen_bf16": (("--dtype", "bfloat16"), torch.bfloat16),  # no autocast: bf16 weights
    }
    steps = {}
    for name, (extra, expected) in runs.items():
        seen, steps[name] = _compute_dtypes_and_log(small_synthetic, tmp_path / name, cache,
                                                    *extra)
        assert seen == {expected}, name
        assert all(s["nonfinite_steps"] == 0 and math.isfinite(s["loss"]) for s in steps[name])
    # The first step starts from the same weights: fp16's (unscaled) grad norm is the fp32 one,
    # not 65536x it.
    ratio = steps["fp16"][0]["grad_norm"] / steps["fp32"][0]["grad_norm"]
    assert 0.8 < ratio < 1.25
    # Frozen weights in bf16, trained parameters and optimizer state in float32.
    folder = ckpt.resolve_checkpoint(tmp_path / "frozen_bf16")
    assert {t.dtype for t in ckpt.read_weights(folder).values()} == {torch.float32}
    state = ckpt.read_training_state(folder)["optimizer"]["state"]
    assert {t.dtype for s in state.values() for k, t in s.items() if k != "step"} == {
        torch.float32}


def test_fsdp_is_refused_not_silently_mistrained(monkeypatch):
    """accelerate selects FSDP only with CUDA; a stand-in Accelerator reports it here."""
    import accelerate
    from accelerate.utils import DistributedType

    class FsdpAccelerator:
        def __init__(self, **kwargs):
            self.num_processes, self.distributed_type = 1, DistributedType.FSDP

    monkeypatch.setattr(accelerate, "Accelerator", FsdpAccelerator)
    with pytest.raises(SystemExit, match="FSDP is not supported"):
        train_m2ugen.make_accelerator()


@pytest.mark.parametrize("outcome", ["returns", "raises"])
def test_the_process_group_is_left_before_exit(monkeypatch, outcome):
    """A gloo group left to interpreter shutdown can abort a finished rank ("terminate called
    without an active exception"), failing a run that trained; main leaves it on every path."""
    ended = []

    class Recorder:
        def end_training(self):
            ended.append(True)

    def train(args, accelerator):
        if outcome == "raises":
            raise RuntimeError("a bug inside training")
        return 0

    monkeypatch.setattr(train_m2ugen, "make_accelerator", Recorder)
    monkeypatch.setattr(train_m2ugen, "train", train)
    argv = ["--stage", "1", "--preset", "tiny", "--data_root", ".", "--output_dir", "."]
    if outcome == "raises":
        with pytest.raises(RuntimeError, match="a bug inside training"):
            train_m2ugen.main(argv)
    else:
        assert train_m2ugen.main(argv) == 0
    assert ended == [True]


def test_init_from_a_release_file_imports_it_once(tmp_path, monkeypatch):
    """`--init_from RELEASE.pth` converts the release into our checkpoint format in the output
    folder (reused on a second call) instead of reading pickle on every start."""
    import argparse

    from llama import checkpoint as ckpt

    ref = Path(__file__).resolve().parent / "llama" / "published_reference"
    comp = ref / "components"
    args = argparse.Namespace(
        init_from=str(ref / "mumu" / "checkpoint.pth"), output_dir=str(tmp_path / "out"),
        llama_path=str(comp), tokenizer_path=None, mert_path=str(comp / "mert"),
        vit_path=str(comp / "vit"), vivit_path=str(comp / "vivit"))
    folder = train_m2ugen.import_release_once(args)
    saved = ckpt.read_config(folder)
    assert saved["release"]["layout"] == "mumu-llama"
    assert saved["m2ugen"]["llama"]["adapter_uses_lora"] is False
    stamp = (folder / ckpt.WEIGHTS_FILE).stat().st_mtime_ns
    assert train_m2ugen.import_release_once(args) == folder  # reused, not imported again
    assert (folder / ckpt.WEIGHTS_FILE).stat().st_mtime_ns == stamp
    monkeypatch.setenv("WORLD_SIZE", "2")
    args.output_dir = str(tmp_path / "other")
    with pytest.raises(ValueError, match="import the release once"):
        train_m2ugen.import_release_once(args)


def _stage(data, out, cache, stage, init, *extra):
    argv = ["--stage", str(stage), "--data_root", str(data), "--output_dir", str(out),
            "--epochs", "1", "--batch_size", "8", "--replay", "0", "--feature_cache", str(cache),
            *(["--init_from", str(init)] if init else []), *extra]
    return train_m2ugen.main(argv)


def test_stage3_ends_with_a_projector_refit_that_resumes_on_its_own(small_synthetic, tmp_path,
                                                                      monkeypatch):
    cache, refit = tmp_path / "cache", ("--projector_refit_steps", "40")
    assert _stage(small_synthetic, tmp_path / "s1", cache, 1, None, "--preset", "tiny") == 0
    assert _stage(small_synthetic, tmp_path / "s2", cache, 2, tmp_path / "s1") == 0
    assert _stage(small_synthetic, tmp_path / "plain", cache, 3, tmp_path / "s2",
                  "--projector_refit_steps", "0") == 0
    assert _stage(small_synthetic, tmp_path / "full", cache, 3, tmp_path / "s2", *refit) == 0

    s2, plain = ckpt.read_weights(tmp_path / "s2"), ckpt.read_weights(tmp_path / "plain")
    full = ckpt.read_weights(tmp_path / "full")
    config = ckpt.read_config(tmp_path / "full")
    assert config["complete"] and config["projector_refit"]["steps"] == 40
    assert config["projector_refit"]["mse_after"] < config["projector_refit"]["mse_before"]
    for name in full:
        if name.startswith("projector."):  # frozen in stage 3's epochs, then refitted
            torch.testing.assert_close(plain[name], s2[name], rtol=0, atol=0, msg=name)
            assert not torch.equal(full[name], s2[name]), name
        else:  # the refit touches nothing else
            torch.testing.assert_close(full[name], plain[name], rtol=0, atol=0, msg=name)

    # Killed between the last epoch and the refit: the stage is not complete yet, and --resume
    # runs only the refit, to the same projector.
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_m2ugen, "refit_projector", killed)
    with pytest.raises(KeyboardInterrupt):
        _stage(small_synthetic, tmp_path / "cut", cache, 3, tmp_path / "s2", *refit)
    assert not ckpt.read_config(tmp_path / "cut")["complete"]
    monkeypatch.undo()
    assert _stage(small_synthetic, tmp_path / "cut", cache, 3, None, *refit, "--resume") == 0
    cut = ckpt.read_weights(tmp_path / "cut")
    assert ckpt.read_config(tmp_path / "cut")["complete"]
    for name in full:
        torch.testing.assert_close(cut[name], full[name], rtol=1e-5, atol=1e-6, msg=name)
    # A finished stage is not refitted twice.
    before = (tmp_path / "cut" / "checkpoint" / "model.safetensors").read_bytes()
    assert _stage(small_synthetic, tmp_path / "cut", cache, 3, None, *refit, "--resume") == 0
    assert (tmp_path / "cut" / "checkpoint" / "model.safetensors").read_bytes() == before


def test_projector_refit_is_a_stage3_phase(small_synthetic, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _run(small_synthetic, tmp_path / "out", tmp_path / "cache",
             "--projector_refit_steps", "10")
    assert exc.value.code == 2 and "stage-3" in capsys.readouterr().err


def test_lora_flags_shape_a_new_model_and_are_checked(capsys):
    base = ["--stage", "1", "--preset", "tiny", "--data_root", ".", "--output_dir", "."]
    args = train_m2ugen.parse_args(base + ["--lora_rank", "2", "--lora_alpha", "6"])
    llama = train_m2ugen.build_config(args).llama
    assert (llama.lora_rank, llama.lora_alpha, llama.lora_scale) == (2, 6.0, 3.0)
    default = train_m2ugen.build_config(train_m2ugen.parse_args(base)).llama
    assert (default.lora_rank, default.lora_alpha, default.lora_scale) == (8, None, 1.0)
    for flag, value in (("--lora_rank", "-1"), ("--lora_alpha", "0")):
        with pytest.raises(SystemExit) as exc:
            train_m2ugen.parse_args(base + [flag, value])
        assert exc.value.code == 2 and flag in capsys.readouterr().err


def test_test_hooks_are_not_training_settings():
    args = train_m2ugen.parse_args(["--stage", "1", "--data_root", ".", "--output_dir", ".",
                                    "--stop_after_steps", "3"])
    assert args.stop_after_steps == 3
    assert not hasattr(args.settings, "stop_after_steps")
    assert "stop_after_steps" not in train_m2ugen.describe_settings(args)
