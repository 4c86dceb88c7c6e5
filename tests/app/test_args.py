"""The shared flags: one-line parse errors, defaults that come from the library only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app import args as app_args

REPO = Path(__file__).resolve().parents[2]


def parser() -> app_args.OneLineParser:
    p = app_args.OneLineParser(prog="prog")
    app_args.add_model_arguments(p)
    app_args.add_generation_arguments(p)
    return p


def test_preset_names_match_config():
    from llama.config import PRESETS

    assert app_args.PRESET_NAMES == tuple(PRESETS)


def test_bad_flag_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["--temperature", "hot"])
    assert exc.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("prog: error:") and "--temperature" in line


def test_unset_generation_flags_are_none_and_given_ones_kept():
    from app.settings import setting_names

    values = app_args.settings_values(parser().parse_args([]))
    assert set(values) == set(setting_names()) and set(values.values()) == {None}
    args = parser().parse_args(["--top_p", "0.5", "--seed", "3"])
    values = app_args.settings_values(args, {"seed": 4})
    assert (values["top_p"], values["seed"], values["temperature"]) == (0.5, 4, None)


def test_help_shows_the_library_defaults(monkeypatch):
    """The numbers in --help are read from GenerationSettings, not written in the flags."""
    from llama.m2ugen import GenerationSettings

    import app.settings

    monkeypatch.setattr(app.settings, "defaults", lambda: GenerationSettings(max_new_tokens=77))
    text = " ".join(parser().format_help().split())
    assert "--max_new_tokens MAX_NEW_TOKENS default: 77" in text
    assert "0 = greedy (default: 0.0)" in text and app_args.DEFAULT_MARK not in text


def test_parsing_needs_no_torch():
    code = ("import sys; from app import args as a; p = a.OneLineParser(); "
            "a.add_model_arguments(p); a.add_generation_arguments(p); "
            "p.parse_args(['--seed', '1']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"
