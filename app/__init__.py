"""Serving layer shared by `inference.py`, `gradio_app.py` and `Evaluation/`.

- `args`: the shared argparse groups (model choice, generation settings) and a parser whose
  errors are one line with exit status 2;
- `settings`: generation settings built and validated from `llama.m2ugen.GenerationSettings`
  (the one source of defaults) and the loaded decoder's configuration;
- `session`: model choice and loading (+ one `data.features.MediaFeatures` per model, so media
  paths become encoder features outside the model package), one chat turn, a chat session with
  history and its own folder;
- `batch`: JSON-lines batch requests -> `results.jsonl` and WAV files with collision-free names;
- `errors`: the one tuple of "bad input" error types and their one-line formatting.

Nothing here prints except through the entry scripts; modules import torch only when a model is
really needed, so `--help` and flag errors stay fast.
"""
