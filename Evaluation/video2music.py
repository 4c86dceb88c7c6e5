"""Video-to-music (MUVideo): `generate` music for each video instruction, `score` it.

    python -m Evaluation.video2music generate --model M [model flags] \
        --references MUVideoEvalInstructions.json --media_dir MUVideo/videos \
        [--target_dir MUVideo/audios] --out pred.json
    python -m Evaluation.video2music score --predictions pred.json [other systems ...] \
        --references MUVideoEvalInstructions.json --target_dir MUVideo/audios \
        --media_dir MUVideo/videos [--fad_weights vggish-10086976.pth] \
        [--kl_model passt --kl_weights PASST.pt] [--clap_model CLAP] \
        [--relevance_model imagebind --imagebind_weights imagebind_huge.pth]

References: the published instruction list (input_file = video). Published metrics: FAD, KL and
an ImageBind relevance rank. Relevance: ImageBind (the paper's model) with
`--relevance_model imagebind --imagebind_weights imagebind_huge.pth`, or, without those weights,
a captioner (a few frames, `--captioner BLIP --video_frames 3`) + CLAP fallback that is NOT
comparable with the paper (docs/EVALUATION.md).
"""

from __future__ import annotations

from Evaluation.music_rows import TaskSpec, instruction_rows
from Evaluation.music_tasks import entry

SPEC = TaskSpec(
    name="video2music", modality="video", load=instruction_rows("video"),
    media_help="folder of the input videos (input_file)",
    targets_in_media_dir=False, published=("fad", "kl", "relevance"),
)

if __name__ == "__main__":
    entry(SPEC, __doc__)
