"""CLAPText on a tiny CLAP: the cosine of ClapModel's own text features, row by row."""

import numpy as np
import pytest
import torch

from Evaluation.metrics.clap_text import MAX_TOKENS, ClapText

pytestmark = pytest.mark.usefixtures("one_thread")

REFS = ["a slow piano melody with soft strings", "fast drums and a loud guitar",
        "the mood is sad"]
CANDS = ["a slow piano melody", "", "the mood is sad"]


def test_rows_are_cosines_of_clap_model_text_features(clap_text_dir):
    from transformers import ClapModel, ClapProcessor

    path = clap_text_dir  # a whole ClapModel folder, as laion/clap-htsat-unfused is
    rows = ClapText(str(path)).rows(CANDS, REFS)
    model, proc = ClapModel.from_pretrained(path).eval(), ClapProcessor.from_pretrained(path)

    def feats(texts):
        inp = proc(text=texts, return_tensors="pt", padding=True, truncation=True,
                   max_length=MAX_TOKENS)
        with torch.no_grad():
            out = model.get_text_features(**inp)
        out = out if isinstance(out, torch.Tensor) else out.pooler_output
        return out.double().numpy()

    a, b = feats(CANDS), feats(REFS)
    want = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(rows, want, rtol=0, atol=1e-6)
    assert rows[2] == pytest.approx(1.0, abs=1e-9)  # same text, same embedding
    assert rows[0] < 1.0 - 1e-6 and np.isfinite(rows).all()


def test_long_texts_are_cut_to_77_tokens_and_lengths_must_match(clap_text_dir):
    clap = ClapText(str(clap_text_dir))
    long = "piano" * 60  # 300 characters: the tiny tokenizer is character-level
    cut = long[: MAX_TOKENS - 2]  # <s> + 75 characters + </s>
    assert clap.rows([long], [cut])[0] == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        clap.rows(["a", "b"], ["a"])


def test_a_folder_without_the_text_tower_is_refused(clap_text_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    for f in clap_text_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    weights = tmp_path / "model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if not k.startswith("text_projection")}
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="text_projection"):
        ClapText(str(tmp_path))
