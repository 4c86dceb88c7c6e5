"""--dtype / --quantize through the serving layer: flag values, bad input (one line, exit 2), and
what `load_model` builds for our checkpoints/presets and for released checkpoint files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import inference
from app import args as app_args
from app import loading
from app.errors import InputError
from llama.quantize import QUANTIZE_MODES, Int8Linear
from util.dtypes import DTYPE_NAMES

pytestmark = pytest.mark.usefixtures("one_thread")

REF = Path(__file__).resolve().parents[1] / "llama" / "published_reference"
COMP = REF / "components"


def _int8_layers(model) -> int:
    return sum(isinstance(m, Int8Linear) for m in model.backbone.modules())


def test_flag_values_are_the_library_modes():
    assert app_args.QUANTIZE_NAMES == QUANTIZE_MODES
    assert app_args.DTYPE_NAMES == ("auto", *DTYPE_NAMES)


def test_int8_on_an_unsupported_device_is_one_line_exit_2(capsys):
    code = inference.main(["--quantize", "int8", "--device", "mps", "--prompt", "hi"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and "--quantize int8" in err and "'mps'" in err


def test_unknown_mode_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        inference.main(["--quantize", "int4", "--prompt", "hi"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "\n" not in err and "int4" in err


def test_missing_kernel_is_bad_input(monkeypatch):
    """A torch build/device without the int8 matmul: QuantizationError becomes InputError."""

    def missing(*_args):
        raise NotImplementedError("no kernel for this backend")

    monkeypatch.setattr(torch, "_weight_int8pack_mm", missing)
    with pytest.raises(InputError, match="no int8 weight-only matmul"):
        loading.check_precision("int8", "cpu", torch.bfloat16)
    loading.check_precision("none", "cpu", torch.float16)  # no kernel needed


def test_choice_carries_the_mode_and_caches_it_apart():
    p = app_args.OneLineParser()
    app_args.add_model_arguments(p)
    plain = loading.choose_model(p.parse_args([]))
    int8 = loading.choose_model(p.parse_args(["--quantize", "int8", "--dtype", "bfloat16"]))
    assert (plain.quantize, int8.quantize, int8.dtype) == ("none", "int8", "bfloat16")
    assert plain.key != int8.key


def test_int8_bfloat16_preset_loads_quantized_and_answers():
    engine = loading.load_model(
        loading.ModelChoice(None, "tiny", {}, "cpu", "bfloat16", quantize="int8"))
    model = engine.model
    assert _int8_layers(model) == 7 * model.cfg.llama.n_layers + 1
    assert model.backbone.norm.weight.dtype == torch.float32  # tuned: kept float32
    assert model.backbone.tok_embeddings.weight.dtype == torch.bfloat16
    settings = engine.settings({"max_new_tokens": 3, "temperature": 0.0})
    reply = engine.run_turn("describe the music", settings=settings, music="never")
    assert len(reply.token_ids) >= 1


def test_released_checkpoint_is_quantized_after_loading():
    args = inference.build_parser().parse_args([
        "--model", str(REF / "m2ugen" / "checkpoint.pth"), "--llama_dir", str(COMP),
        "--mert_path", str(COMP / "mert"), "--vit_path", str(COMP / "vit"),
        "--vivit_path", str(COMP / "vivit"), "--device", "cpu", "--quantize", "int8",
        "--prompt", "hi"])
    engine = loading.load_model(loading.choose_model(args))
    assert engine.model.cfg.chat_style.name == "published-m2ugen"
    assert _int8_layers(engine.model) == 7 * engine.model.backbone.config.n_layers + 1
    settings = engine.settings({"max_new_tokens": 3, "temperature": 0.0})
    assert len(engine.run_turn("hi", settings=settings, music="never").token_ids) >= 1


def test_synthetic_evaluation_passes_the_flags(monkeypatch, tmp_path):
    from Evaluation import synthetic

    seen = {}

    def fake_load(checkpoint, feature_cache, dtype, quantize):
        seen.update(dtype=dtype, quantize=quantize)
        raise InputError("stop here")

    monkeypatch.setattr(synthetic, "missing_ground_truth", lambda root: None)
    monkeypatch.setattr(synthetic, "load_evaluated_model", fake_load)
    code = synthetic.main(["--model", str(tmp_path), "--data_root", str(tmp_path),
                           "--dtype", "bfloat16", "--quantize", "int8"])
    assert code == 2 and seen == {"dtype": "bfloat16", "quantize": "int8"}
