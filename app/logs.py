"""Logging for the entry scripts: our own messages on stderr, library chatter off by default.

Without --verbose, warnings and progress bars of transformers / diffusers / huggingface_hub are
silenced so that a bad-input error stays the one line the user sees.
"""

from __future__ import annotations

import logging
import warnings

LIBRARIES = ("transformers", "diffusers", "huggingface_hub", "accelerate")


def setup_logging(verbose: bool) -> None:
    """INFO and library output with `verbose`; otherwise WARNING and quiet libraries."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    warnings.filterwarnings("ignore")
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
