"""The generated lexnames file and the offline WordNet folder nltk reads."""

from Evaluation.metrics import wordnet as W


def test_lexnames_has_45_standard_lines():
    lines = W.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"


def test_install_copies_debian_files_and_nltk_reads_them(tmp_path, monkeypatch):
    dest = W.install(tmp_path / "nltk_data")
    assert (dest / "lexnames").is_file() and (dest / "index.sense").is_file()
    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "nltk_data"))
    assert W.use_project_wordnet() == tmp_path / "nltk_data"


def test_missing_wordnet_names_the_fix(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setenv("NLTK_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        W.use_project_wordnet()
