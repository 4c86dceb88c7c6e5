"""AdamW's parameter groups: decay on weight matrices only; the bridges' learning-rate scale."""

import torch
from torch import nn

from training.optim import make_adamw, param_groups


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.bridges = nn.ModuleDict({"audio": nn.Linear(4, 2)})
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _by_name(model: nn.Module, groups: list[dict]) -> dict[str, dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in groups for p in g["params"]}


def test_no_weight_decay_on_biases_and_vectors_and_none_on_frozen_weights():
    toy = Toy()
    groups = _by_name(toy, param_groups(toy, 0.05))
    assert set(groups) == {"lin.weight", "lin.bias", "bridges.audio.weight", "bridges.audio.bias"}
    assert {n for n, g in groups.items() if g["weight_decay"] > 0} == {
        "lin.weight", "bridges.audio.weight"}


def test_bridges_get_their_own_learning_rate_scale():
    toy = Toy()
    groups = _by_name(toy, param_groups(toy, 0.05, bridge_lr_scale=0.3))
    assert {n: g["lr_scale"] for n, g in groups.items()} == {
        "lin.weight": 1.0, "lin.bias": 1.0, "bridges.audio.weight": 0.3,
        "bridges.audio.bias": 0.3}
    opt = make_adamw(toy, lr=0.1, weight_decay=0.05)
    assert opt.defaults["betas"] == (0.9, 0.95) and isinstance(opt, torch.optim.AdamW)
