"""The projector refit (engine_refit.py): it fits, stops on a non-finite loss, and leaves the
projector's trainable flags as it found them."""

import pytest
import torch

from engine_refit import RefitSettings, fit_projector, mix_rows, projector_mse
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


def test_mixing_rows_mixes_inputs_and_targets_with_the_same_weights():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, 16, generator=g)
    a = torch.randn(16, 12, generator=g)
    torch.manual_seed(3)
    xm, ym = mix_rows(x, x @ a, 0.4, torch.Generator().manual_seed(1))
    torch.testing.assert_close(ym, xm @ a)  # a linear map commutes with the mixing
    assert not torch.allclose(xm, x)
    # each mixed row is w * its row + (1 - w) * one row of the batch, 0 <= w <= 1
    for i in range(len(x)):
        d = (xm[i] - x[i]).flatten()
        fits = []
        for j in range(len(x)):
            step = (x[j] - x[i]).flatten()
            if j != i:
                t = float(d @ step / (step @ step))
                fits.append((float((d - t * step).norm()), t))
        residual, t = min(fits)
        assert residual < 1e-4 and -1e-6 <= t <= 1 + 1e-6


def test_mixup_changes_the_fit_and_is_reproducible():
    x, y = _task()
    plain, mixed, again = _projector(0), _projector(0), _projector(0)
    fit_projector(plain, x, y, RefitSettings(steps=20, seed=5))
    fit_projector(mixed, x, y, RefitSettings(steps=20, seed=5, mixup=0.4))
    fit_projector(again, x, y, RefitSettings(steps=20, seed=5, mixup=0.4))
    assert not torch.equal(plain.fc.weight, mixed.fc.weight)
    for (name, pa), pb in zip(mixed.named_parameters(), again.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)


def test_a_fresh_start_forgets_the_weights_it_was_given_and_the_global_generator_is_kept():
    x, y = _task()
    a, b = _projector(0), _projector(7)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    fit_projector(a, x, y, RefitSettings(steps=5, seed=5, start="fresh"))
    fit_projector(b, x, y, RefitSettings(steps=5, seed=5, start="fresh"))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
    trained = _projector(7)
    fit_projector(trained, x, y, RefitSettings(steps=5, seed=5))
    assert not torch.equal(trained.fc.weight, a.fc.weight)


@pytest.mark.parametrize("kwargs, word", [({"mixup": -0.1}, "mixup"), ({"start": "warm"}, "start"),
                                          ({"batch_size": 0}, "batch_size")])
def test_bad_refit_settings_are_refused_with_their_name(kwargs, word):
    with pytest.raises(ValueError, match=word):
        RefitSettings(steps=10, **kwargs)
