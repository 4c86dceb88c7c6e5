"""`Evaluation.music_tasks`: --media_control on the generate verbs whose model reads media."""

import json

import pytest

from Evaluation import editing, image2music, text2music, video2music
from Evaluation.music_tasks import build_parser, main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("task,reads_media", [(image2music, True), (video2music, True),
                                              (editing, True), (text2music, False)])
def test_media_control_flag_only_where_the_model_reads_media(task, reads_media):
    parser = build_parser(task.SPEC, task.__doc__)
    base = ["generate", "--references", "r.json", "--media_dir", "m", "--out", "o.json"]
    if reads_media:
        assert parser.parse_args(base).media_control == "none"
        assert parser.parse_args(base + ["--media_control", "shuffled"]).media_control == "shuffled"
    else:
        with pytest.raises(SystemExit):
            parser.parse_args(base + ["--media_control", "silence"])


def test_controlled_manifest_records_its_control_and_is_never_mixed(small_synthetic, tmp_path,
                                                                    capsys):
    d = small_synthetic / "MUEdit" / "audios"
    rows = json.loads((small_synthetic / "MUEdit" / "MUEditInstructions.json").read_text())[:2]
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(rows))
    out = tmp_path / "silence.json"
    gen = ["generate", "--references", str(refs), "--media_dir", str(d), "--out", str(out),
           "--max_new_tokens", "4", "--audio_seconds", "1"]
    run = lambda argv: main(editing.SPEC, editing.__doc__, argv)  # noqa: E731
    assert run(gen + ["--media_control", "silence"]) == 0
    manifest = json.loads(out.read_text())
    assert manifest["media_control"] == "silence" and len(manifest["items"]) == 2
    capsys.readouterr()
    assert run(gen) == 2  # the same --out without the control: refused, never mixed
    assert "written with another media_control" in capsys.readouterr().err
