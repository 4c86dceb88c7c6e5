"""Music editing (MUEdit): `generate` the edited music for each source + instruction, `score` it.

    python -m Evaluation.editing generate --model M [model flags] \
        --references MUEditEvalInstructions.json --media_dir MUEdit/audios --out pred.json
    python -m Evaluation.editing score --predictions pred.json [other systems ...] \
        --references MUEditEvalInstructions.json --target_dir MUEdit/audios \
        --media_dir MUEdit/audios [--fad_weights vggish-10086976.pth] \
        [--kl_model passt --kl_weights PASST.pt] [--clap_model CLAP]

References: MUEdit-schema pairs (input_file = source music, output_file = target music, first
human turn = the instruction, last gpt caption = the target's caption). The published repository
has no editing evaluate script; we report FAD, KL(target || edited) and CLAP to the target
caption, and the same numbers for the unedited source (`baselines.source`): an edit is only
useful where it beats copying the source.
"""

from __future__ import annotations

from Evaluation.music_rows import TaskSpec, instruction_rows
from Evaluation.music_tasks import entry

SPEC = TaskSpec(
    name="editing", modality="audio", load=instruction_rows("audio"),
    media_help="folder of the source music (input_file); also holds the targets unless "
               "--target_dir",
    targets_in_media_dir=True, published=(),
)

if __name__ == "__main__":
    entry(SPEC, __doc__)
