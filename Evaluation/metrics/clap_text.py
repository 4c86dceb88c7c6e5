"""CLAPText (arXiv 2511.05550): a text metric that reads meaning, not wording.

Per row, the cosine between the CLAP text embeddings of the answer and of the reference. The
text tower is LAION-CLAP's (`laion/clap-htsat-unfused` as converted by transformers: the 630k
non-fusion checkpoint, a RoBERTa-base text encoder with a projection into the audio-text
space), loaded with transformers' `ClapTextModelWithProjection` from a hub id or a local folder
(a whole `ClapModel` folder works: only the text tower is read). Texts are tokenised as LAION-CLAP
tokenises them (its RoBERTa tokenizer, truncated to 77 tokens); an empty answer is encoded as the
special tokens alone.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from Evaluation.metrics.audio import cosine_rows

MAX_TOKENS = 77  # LAION-CLAP's text length


class ClapText:
    """Text embeddings of the CLAP text tower, memoised per distinct text."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 32) -> None:
        from transformers import AutoTokenizer, ClapTextModelWithProjection
        from transformers.utils import logging

        level = logging.get_verbosity()
        logging.set_verbosity_error()  # a whole ClapModel folder: the audio tower is unused
        try:
            model, info = ClapTextModelWithProjection.from_pretrained(path,
                                                                      output_loading_info=True)
        finally:
            logging.set_verbosity(level)
        if info["missing_keys"]:  # never score with a randomly initialised text tower
            raise ValueError(f"{path} lacks CLAP text-tower weights: "
                             f"{sorted(info['missing_keys'])[:5]}")
        self.model = model.eval().to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.device, self.batch_size = device, max(1, batch_size)
        self.identity = f"clap_text:{path}"
        self._memo: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float64 projected text embeddings, in input order."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._memo]
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            inp = self.tokenizer(chunk, padding=True, truncation=True, max_length=MAX_TOKENS,
                                 return_tensors="pt")
            out = self.model(**{k: v.to(self.device) for k, v in inp.items()}).text_embeds
            self._memo.update(zip(chunk, out.double().cpu().numpy()))
        return np.stack([self._memo[t] for t in texts])

    def rows(self, cands: Sequence[str], refs: Sequence[str]) -> np.ndarray:
        """Per-row cosine of answer and reference embeddings (float64, row order kept)."""
        if len(cands) != len(refs):
            raise ValueError(f"{len(cands)} candidates but {len(refs)} references")
        return cosine_rows(self.embed(list(cands)), self.embed(list(refs)))
