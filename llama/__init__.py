"""The M2UGen model package: tensors in, tensors out (imports only `llama` and `util`; no file
I/O beyond loading weights and writing checkpoints).

Public entry points (kept stable, see docs/DATA.md):
`llama.load_backbone(path, dtype=None, device="cpu")`, `llama.format_prompt(instruction)`,
`llama.tokenizer.load_tokenizer(path)`, `llama.generation.generate(...)`,
`llama.m2ugen.M2UGen`. Attributes are resolved lazily so that `import llama.config` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_backbone", "format_prompt", "format_followup", "load_tokenizer"]


def __getattr__(name: str) -> Any:
    if name == "load_backbone":
        from llama.weights import load_backbone

        return load_backbone
    if name in ("format_prompt", "format_followup"):
        from llama import prompt

        return getattr(prompt, name)
    if name == "load_tokenizer":
        from llama.tokenizer import load_tokenizer

        return load_tokenizer
    raise AttributeError(f"module 'llama' has no attribute {name!r}")
