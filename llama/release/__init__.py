"""The released M2UGen / MuMu-LLaMA `checkpoint.pth` files (docs/RELEASES.md).

- `read.py`: pickle-safe, memory-mapped reading of a release file.
- `keymap.py`: THE table of how a release key maps to ours (layouts, old names, ignored keys).
- `infer.py`: the configuration a release's tensors show (LLaMA, bridges, projector, decoder).
- `components.py`: the frozen MERT / ViT / ViViT the file holds, sized from their tensors.
- `musicgen.py`: the MusicGen the MusicGen releases hold.
- `load.py`: a release (or an imported folder) as an `M2UGen` computing the published forward.
- `export.py`: a release as our checkpoint folder (`python -m llama.import_published`).
"""
