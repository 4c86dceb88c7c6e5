"""Dataset-generation pipelines (MUCaps, MUEdit, MUImage, MUVideo, MusicQA); see docs/DATASETS.md.

One CLI per dataset (`python -m DataSet.<dataset> <step> ...`); every step is resumable and writes
a manifest (`DataSet.common`); the last step of each dataset writes the published JSON schema
that `data` reads for training. Nothing in the project imports this package.
"""
