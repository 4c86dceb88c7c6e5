"""Text-to-music (MUCaps): `generate` music for each eval caption, `score` it.

    python -m Evaluation.text2music generate --model M [model flags] \
        --references MUCapsEvalCaptions.json --media_dir MUCaps/audios_eval --out pred.json
    python -m Evaluation.text2music score --predictions pred.json \
        --references MUCapsEvalCaptions.json --target_dir MUCaps/audios_eval \
        [--fad_weights vggish-10086976.pth] [--kl_model passt --kl_weights PASST.pt] \
        [--clap_model CLAP]

References: {music file: caption}. The caption is the prompt (as published) and the CLAP text;
--media_dir holds the reference music, whose length each generated clip takes (capped at the
decoder's maximum). Published metrics: FAD (VGGish), KL (PaSST), CLAP.
Definitions and what is comparable with the paper: docs/EVALUATION.md.
"""

from __future__ import annotations

from Evaluation.music_rows import TaskSpec, load_caption_rows
from Evaluation.music_tasks import entry

SPEC = TaskSpec(
    name="text2music", modality=None, load=load_caption_rows,
    media_help="folder of the reference music (sets each clip's length)",
    targets_in_media_dir=True, published=("fad", "kl", "clap"),
)

if __name__ == "__main__":
    entry(SPEC, __doc__)
