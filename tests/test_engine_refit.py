"""The projector refit (engine_refit.py): it fits, stops on a non-finite loss, and leaves the
projector's trainable flags as it found them."""

import pytest
import torch

from engine_refit import RefitSettings, fit_projector, projector_mse
from engine_train import NonFiniteLoss
from llama.config import ProjectorConfig
from llama.projector import OutputProjector

pytestmark = pytest.mark.usefixtures("one_thread")


def _projector(seed: int) -> OutputProjector:
    torch.manual_seed(seed)
    cfg = ProjectorConfig(d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=1,
                          ffn_dim=64, n_output_tokens=4, output_dim=12)
    return OutputProjector(16, cfg)


def _task(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets another projector computes from the inputs: learnable exactly."""
    teacher = _projector(1).eval()
    x = torch.randn(n, 8, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return x, 3 * teacher(x)


def test_the_fit_lowers_the_error_and_reports_it():
    x, y = _task()
    student = _projector(0)
    for p in student.parameters():
        p.requires_grad_(False)  # frozen in stage 3, as the refit finds it
    result = fit_projector(student, x, y, RefitSettings(steps=300, lr=3e-3, seed=0))
    assert result["rows"] == 64 and result["steps"] == 300
    assert result["mse_after"] == pytest.approx(projector_mse(student, x, y))
    assert result["mse_after"] < 0.3 * result["mse_before"]
    assert not any(p.requires_grad for p in student.parameters())


def test_the_same_seed_gives_the_same_projector():
    x, y = _task()
    a, b = _projector(0), _projector(0)
    fit_projector(a, x, y, RefitSettings(steps=20, seed=5))
    fit_projector(b, x, y, RefitSettings(steps=20, seed=5))
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)


def test_a_non_finite_loss_stops_before_the_projector_is_stepped():
    x, y = _task()
    y[:] = float("nan")
    student = _projector(0)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    with pytest.raises(NonFiniteLoss, match="step 0"):
        fit_projector(student, x, y, RefitSettings(steps=10))
    for name, p in student.named_parameters():
        assert torch.equal(p, before[name]), name


def test_zero_steps_are_refused():
    x, y = _task(4)
    with pytest.raises(ValueError, match="steps"):
        fit_projector(_projector(0), x, y, RefitSettings(steps=0))
