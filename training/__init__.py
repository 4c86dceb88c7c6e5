"""The pieces of a training stage that `engine_train.Trainer` composes, one job per module:

- `sampler`: which samples each process trains on, epoch by epoch;
- `optim`: AdamW with decay on weight matrices only (every phase's optimizer);
- `precision`: autocast and the fp16 gradient scaler;
- `collectives`: the two all-reduces the loop needs (no-ops in one process);
- `targets`: the decoder targets of the projector, cached;
- `step`: one batch -> the loss.

The settings themselves are `llama.config.TrainSettings`.
"""
