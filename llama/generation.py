"""Batched text generation with the KV cache: greedy or top-p sampling, EOS and stop strings.

Prompts of different lengths share one batch: they are left-padded, the attention mask hides the
padding and every row gets its own positions (see `llama.backbone.KVCache`). The prompt is run once
(prefill); afterwards each step feeds one token per row. The published code recomputed the whole
sequence every step (docs/MODEL.md section 7.2).

`stream_generate` yields, after every step, the tokens each row released in that step;
`generate` is the concatenation of those yields. With stop strings, tokens that could be the start
of a stop string are held back until it is clear they are not, so streamed text never has to be
retracted. Neither EOS nor a stop string's tokens are returned.

This is the one decoding loop: our models and the released checkpoints differ only in when a row
ends (`llama.chat_style.StopRule`, turned into the arguments below by `llama.chat`): `end_ids`
(ids that end a row and are returned, e.g. [AUD0]), `end_after` (ids whose in-order occurrence
ends a row) and `stop_tail_tokens` (the published check: the row ends when its last k ids decode
exactly to a stop string, and those ids are returned).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional, Union

import torch

from llama.backbone import Transformer


def select_next(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """logits (B, V) -> next ids (B,): argmax when temperature is 0, else nucleus sampling.

    Top-p keeps the smallest set of most likely tokens whose mass reaches top_p (always at least
    the most likely one), renormalises and samples with `generator` (seed it to reproduce).
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before > top_p, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _Row:
    """One prompt's output: all kept ids, how many were released to the caller, done flag, and
    how much of `end_after` it has produced in order."""

    __slots__ = ("ids", "released", "done", "matched")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.released = 0
        self.done = False
        self.matched = 0

    def release(self, upto: int) -> list[int]:
        upto = max(upto, self.released)
        out = self.ids[self.released : upto]
        self.released = upto
        return out


class _StopStrings:
    """Finds stop strings in decoded text and decides which tokens are safe to release."""

    def __init__(self, stops: Sequence[str], tokenizer: Any, tail_tokens: int = 0) -> None:
        if any(not s for s in stops):
            raise ValueError("stop_strings must be non-empty strings")
        if tokenizer is None:
            raise ValueError("stop_strings need a tokenizer to decode the generated tokens")
        if tail_tokens < 0:
            raise ValueError(f"stop_tail_tokens must be >= 0, got {tail_tokens}")
        self.stops = tuple(stops)
        self.tokenizer = tokenizer
        self.tail = tail_tokens

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def _tokens_within(self, ids: list[int], n_chars: int, lo: int) -> int:
        """Largest j >= lo such that ids[:j] decodes to at most n_chars characters."""
        for j in range(len(ids), lo, -1):
            if len(self.decode(ids[:j])) <= n_chars:
                return j
        return lo

    def update(self, row: _Row) -> list[int]:
        """After row.ids grew by one token: release what is safe; finish the row on a stop."""
        if self.tail:  # the published check: the last k ids decode to exactly a stop string
            if len(row.ids) >= self.tail and self.decode(row.ids[-self.tail:]) in self.stops:
                row.done = True
                return row.release(len(row.ids))
        text = self.decode(row.ids)
        hits = [] if self.tail else [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            keep = self._tokens_within(row.ids, min(hits), row.released)
            out = row.release(keep)
            del row.ids[keep:]
            row.done = True
            return out
        held = 0  # longest suffix of text that is a proper prefix of some stop string
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), held, -1):
                if text.endswith(s[:k]):
                    held = k
                    break
        if held == 0:
            return row.release(len(row.ids))
        return row.release(self._tokens_within(row.ids, len(text) - held, row.released))


def _eos_set(eos_id: Union[int, Sequence[int], None], tokenizer: Any) -> frozenset[int]:
    if eos_id is None:
        eos_id = getattr(tokenizer, "eos_id", None) if tokenizer is not None else None
    if eos_id is None:
        return frozenset()
    if isinstance(eos_id, int):
        return frozenset((eos_id,))
    return frozenset(int(e) for e in eos_id)


def stream_generate(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    *,
    eos_id: Union[int, Sequence[int], None] = None,
    stop_strings: Sequence[str] = (),
    tokenizer: Any = None,
    generator: Optional[torch.Generator] = None,
    modality_features: Optional[torch.Tensor] = None,
    pad_id: int = 0,
    end_ids: Sequence[int] = (),
    end_after: Sequence[int] = (),
    stop_tail_tokens: int = 0,
) -> Iterator[list[list[int]]]:
    """Yield, per decoding step, a list (one entry per prompt) of the token ids released then.

    eos_id: int or ids that end a row, not returned (default: tokenizer.eos_id when a tokenizer
    is given; `()` for none).
    stop_strings: a row ends when its decoded output contains one (needs `tokenizer` with
    `decode(ids) -> str`); the stop string's tokens are not returned. With `stop_tail_tokens`
    k > 0 instead: a row ends when its last k ids decode to exactly a stop string, and they are
    returned (the published rule).
    end_ids: ids that end a row and are returned. end_after: ids that end a row once all of them
    were generated in this order (others may come between; the last one is returned).
    generator: a torch.Generator on the model's device for reproducible sampling.
    modality_features: (B, n_modalities, dim) adapter features, as for `Transformer.forward`.
    """
    if isinstance(stop_strings, str):
        stop_strings = (stop_strings,)
    if not prompts:
        raise ValueError("generate needs at least one prompt")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    lengths = [len(p) for p in prompts]
    if min(lengths) == 0:
        raise ValueError(f"prompt {lengths.index(0)} is empty (it needs at least a BOS token)")
    stops = _StopStrings(stop_strings, tokenizer, stop_tail_tokens) if stop_strings else None
    ends = _Ends(_eos_set(eos_id, tokenizer), frozenset(int(i) for i in end_ids),
                 tuple(int(i) for i in end_after))
    # Arguments are checked above, eagerly; the decoding loop runs lazily as the caller iterates.
    return _stream(
        model, prompts, max_new_tokens, temperature, top_p, ends, stops, generator,
        modality_features, pad_id,
    )


class _Ends:
    """Token rules that end a row: EOS (not returned), end ids (returned), an in-order run."""

    def __init__(self, eos: frozenset[int], end_ids: frozenset[int],
                 end_after: tuple[int, ...]) -> None:
        self.eos = eos
        self.end_ids = end_ids
        self.end_after = end_after

    def add(self, row: _Row, tok: int, stops: Optional[_StopStrings]) -> list[int]:
        """Append `tok` to `row` (unless EOS) and return the ids it releases now."""
        if tok in self.eos:
            row.done = True
            return row.release(len(row.ids))
        row.ids.append(tok)
        run = self.end_after
        if run and tok == run[row.matched]:
            row.matched += 1
            if row.matched == len(run):
                row.done = True
        if tok in self.end_ids or row.done:
            row.done = True
            return row.release(len(row.ids))
        return stops.update(row) if stops else row.release(len(row.ids))


def _stream(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    ends: _Ends,
    stops: Optional[_StopStrings],
    generator: Optional[torch.Generator],
    modality_features: Optional[torch.Tensor],
    pad_id: int,
) -> Iterator[list[list[int]]]:
    if max_new_tokens == 0:
        return
    lengths = [len(p) for p in prompts]
    B, L = len(prompts), max(lengths)
    device = model.device
    tokens = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.bool)
    for b, p in enumerate(prompts):
        tokens[b, L - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        mask[b, L - len(p) :] = True
    tokens = tokens.to(device)
    padded = min(lengths) != L
    rows = [_Row() for _ in range(B)]

    with torch.inference_mode():
        cache = model.new_cache(B, L + max_new_tokens)
        logits = model(
            tokens,
            modality_features=modality_features,
            cache=cache,
            attention_mask=mask.to(device) if padded else None,
            last_only=True,
        )[:, -1]

    for step in range(max_new_tokens):
        with torch.inference_mode():
            nxt = select_next(logits, temperature, top_p, generator)
        released = [[] if row.done else ends.add(row, tok, stops)
                    for row, tok in zip(rows, nxt.tolist())]
        last = step == max_new_tokens - 1 or all(r.done for r in rows)
        if last:
            # Held-back tokens that never completed a stop string belong to the answer.
            for row, out in zip(rows, released):
                out.extend(row.release(len(row.ids)))
        yield released
        if last:
            return
        with torch.inference_mode():
            logits = model(nxt[:, None], cache=cache, last_only=True)[:, -1]


def generate(
    model: Transformer,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    **kwargs: Any,
) -> list[list[int]]:
    """New token ids per prompt (greedy when temperature is 0), without EOS / stop-string tokens.

    Same arguments as `stream_generate` (keyword-only ones passed through); uses the KV cache.
    """
    out: list[list[int]] = [[] for _ in prompts]
    for step in stream_generate(model, prompts, max_new_tokens, temperature, top_p, **kwargs):
        for acc, toks in zip(out, step):
            acc.extend(toks)
    return out


__all__ = ["generate", "select_next", "stream_generate"]
