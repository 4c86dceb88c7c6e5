"""Image-to-music (MUImage): `generate` music for each image instruction, `score` it.

    python -m Evaluation.image2music generate --model M [model flags] \
        --references MUImageEvalInstructions.json --media_dir MUImage/images \
        [--target_dir MUImage/audios] --out pred.json
    python -m Evaluation.image2music score --predictions pred.json [other systems ...] \
        --references MUImageEvalInstructions.json --target_dir MUImage/audios \
        --media_dir MUImage/images [--fad_weights vggish-10086976.pth] \
        [--kl_model passt --kl_weights PASST.pt] [--clap_model CLAP] \
        [--relevance_model imagebind --imagebind_weights imagebind_huge.pth]

References: the published instruction list (input_file = image, output_file = reference music,
first human turn = the prompt, last gpt caption = the target caption). Published metrics: FAD,
KL and an ImageBind relevance rank. Relevance: ImageBind (the paper's model) with
`--relevance_model imagebind --imagebind_weights imagebind_huge.pth`, or, without those weights,
a captioner + CLAP fallback (`--captioner BLIP`) that is NOT comparable with the paper
(docs/EVALUATION.md).
"""

from __future__ import annotations

from Evaluation.music_rows import TaskSpec, instruction_rows
from Evaluation.music_tasks import entry

SPEC = TaskSpec(
    name="image2music", modality="image", load=instruction_rows("image"),
    media_help="folder of the input images (input_file)",
    targets_in_media_dir=False, published=("fad", "kl", "relevance"),
)

if __name__ == "__main__":
    entry(SPEC, __doc__)
