"""Serving layer shared by `inference.py`, `gradio_app.py` and `Evaluation/`.

- `args`: the shared argparse groups (model choice, generation settings) and a parser whose
  errors are one line with exit status 2;
- `settings`: generation settings built and validated from `llama.m2ugen.GenerationSettings`
  (the one source of defaults) and the loaded decoder's configuration;
- `loading`: model choice and loading (+ one `data.features.MediaFeatures` per model, so media
  paths become encoder features outside the model package), typed load errors per component;
- `engine`: one loaded model: settings, the input checks of a turn, typed stream events;
- `chat`: a chat session with history and its own folder;
- `service`: the web demo's sessions, uploads and expiry;
- `batch`: JSON-lines batch requests -> `results.jsonl` and WAV files with collision-free names;
- `errors`: the one tuple of "bad input" error types and their one-line formatting.

Nothing here prints except through the entry scripts; modules import torch only when a model is
really needed, so `--help` and flag errors stay fast.
"""
