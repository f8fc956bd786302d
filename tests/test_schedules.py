"""Beta schedules against their closed forms, and the coefficients DiffusionSchedule derives from them."""

import math
import re

import numpy as np
import pytest
import torch as th

from sb3_qvpo.diffusion import BETA_SCHEDULES, DiffusionSchedule, make_betas
from sb3_qvpo.diffusion.schedules import cosine_beta_schedule, linear_beta_schedule, vp_beta_schedule

STEP_COUNTS = [1, 2, 5, 20, 100]


def cosine_reference(n_steps: int, s: float = 0.008) -> np.ndarray:
    def alpha_bar(t: float) -> float:
        return math.cos(((t / n_steps) + s) / (1 + s) * math.pi / 2) ** 2

    abar = np.array([alpha_bar(t) for t in range(n_steps + 1)]) / alpha_bar(0)
    betas = np.array([1.0 - abar[t + 1] / abar[t] for t in range(n_steps)])
    return np.clip(betas, 0.0, 0.999)


def linear_reference(n_steps: int) -> np.ndarray:
    return np.linspace(1e-4, 2e-2, n_steps)


def vp_reference(n_steps: int, b_min: float = 0.1, b_max: float = 10.0) -> np.ndarray:
    t = np.arange(1, n_steps + 1, dtype=np.float64)
    alpha = np.exp(-b_min / n_steps - 0.5 * (b_max - b_min) * (2 * t - 1) / n_steps**2)
    return 1.0 - alpha


REFERENCES = {"cosine": cosine_reference, "linear": linear_reference, "vp": vp_reference}


@pytest.mark.parametrize("n_steps", STEP_COUNTS)
@pytest.mark.parametrize("name", BETA_SCHEDULES)
def test_betas_match_closed_form(name: str, n_steps: int) -> None:
    betas = make_betas(name, n_steps)
    assert betas.shape == (n_steps,)
    assert betas.dtype == th.float32
    np.testing.assert_allclose(betas.numpy(), REFERENCES[name](n_steps), rtol=1e-5, atol=1e-7)
    assert th.all(betas >= 0) and th.all(betas < 1)


def test_named_functions_match_make_betas() -> None:
    for name, function in (("cosine", cosine_beta_schedule), ("linear", linear_beta_schedule), ("vp", vp_beta_schedule)):
        th.testing.assert_close(make_betas(name, 7), function(7), rtol=0, atol=0)


def test_cosine_clips_last_beta() -> None:
    # With T = 1, alpha_bar(1) = cos(pi / 2)^2 ~ 0, so beta_0 ~ 1 and is clipped to 0.999.
    assert cosine_beta_schedule(1).item() == pytest.approx(0.999)
    assert th.all(cosine_beta_schedule(1000) <= 0.999)


def test_linear_endpoints() -> None:
    betas = linear_beta_schedule(20)
    assert betas[0].item() == pytest.approx(1e-4)
    assert betas[-1].item() == pytest.approx(2e-2)
    assert th.all(betas[1:] > betas[:-1])


def derived_reference(betas: np.ndarray) -> dict[str, np.ndarray]:
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    variance = betas * (1.0 - abar_prev) / (1.0 - abar)
    return {
        "alphas_cumprod": abar,
        "sqrt_alphas_cumprod": np.sqrt(abar),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
        "posterior_mean_coef_x0": betas * np.sqrt(abar_prev) / (1.0 - abar),
        "posterior_mean_coef_xt": (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar),
        "posterior_std": np.sqrt(np.maximum(variance, 1e-20)),
    }


@pytest.mark.parametrize("n_steps", STEP_COUNTS)
@pytest.mark.parametrize("name", BETA_SCHEDULES)
def test_derived_coefficients(name: str, n_steps: int) -> None:
    schedule = DiffusionSchedule(n_steps, name)
    betas = REFERENCES[name](n_steps)
    np.testing.assert_allclose(schedule.betas.numpy(), betas, rtol=1e-5, atol=1e-7)
    # Computed from the float32 betas the module uses, so the comparison isolates the derivation.
    reference = derived_reference(make_betas(name, n_steps).double().numpy())
    for key, expected in reference.items():
        value = getattr(schedule, key)
        assert value.shape == (n_steps,), key
        assert value.dtype == th.float32, key
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5, atol=1e-7, err_msg=key)

    np.testing.assert_allclose(schedule.alphas_cumprod.numpy(), np.cumprod(1.0 - schedule.betas.double().numpy()), rtol=1e-5)
    unit = schedule.sqrt_alphas_cumprod.double() ** 2 + schedule.sqrt_one_minus_alphas_cumprod.double() ** 2
    np.testing.assert_allclose(unit.numpy(), 1.0, rtol=1e-6)
    # The t = 0 posterior variance is exactly 0: floored at 1e-20, its std is 1e-10.
    assert schedule.posterior_std[0].item() <= 1e-10 * (1 + 1e-5)
    assert th.all(schedule.posterior_std[1:] > 1e-6)
    # At t = 0 the posterior mean is x0 itself.
    assert schedule.posterior_mean_coef_x0[0].item() == pytest.approx(1.0, abs=1e-6)
    assert schedule.posterior_mean_coef_xt[0].item() == pytest.approx(0.0, abs=1e-6)
    assert th.all(th.isfinite(th.stack([getattr(schedule, key) for key in reference])))


@pytest.mark.parametrize("name", BETA_SCHEDULES)
def test_reverse_coefficients_match_buffers(name: str) -> None:
    schedule = DiffusionSchedule(6, name)
    assert len(schedule.reverse_coefficients) == 6
    keys = (
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_mean_coef_x0",
        "posterior_mean_coef_xt",
        "posterior_std",
    )
    for t, row in enumerate(schedule.reverse_coefficients):
        assert len(row) == 5
        assert all(isinstance(value, float) for value in row)
        for key, value in zip(keys, row, strict=True):
            assert value == pytest.approx(getattr(schedule, key)[t].item(), rel=1e-6, abs=1e-12), (key, t)


def test_buffers_are_non_persistent_but_follow_to() -> None:
    schedule = DiffusionSchedule(5)
    buffer_names = {name for name, _ in schedule.named_buffers()}
    assert {"betas", "alphas_cumprod", "posterior_std", "posterior_mean_coef_x0"} <= buffer_names
    assert len(schedule.state_dict()) == 0
    assert list(schedule.parameters()) == []

    doubled = schedule.to(th.float64)
    for name in buffer_names:
        assert getattr(doubled, name).dtype == th.float64, name
    # The cuda/meta device move is exercised with the meta device, which every torch build has.
    moved = DiffusionSchedule(5).to("meta")
    for name in buffer_names:
        assert getattr(moved, name).device.type == "meta", name


def test_schedule_in_a_parent_module_state_dict() -> None:
    parent = th.nn.Module()
    parent.schedule = DiffusionSchedule(4)
    parent.linear = th.nn.Linear(2, 2)
    assert not any("schedule" in key for key in parent.state_dict())
    # Loading a state dict without schedule entries is an exact match.
    parent.load_state_dict(parent.state_dict(), strict=True)


def test_extra_repr() -> None:
    text = repr(DiffusionSchedule(3, "vp"))
    assert "n_steps=3" in text and "'vp'" in text


def test_unknown_schedule_name() -> None:
    with pytest.raises(ValueError, match="'sigmoid'"):
        make_betas("sigmoid", 5)
    with pytest.raises(ValueError, match="'sigmoid'"):
        DiffusionSchedule(5, "sigmoid")


@pytest.mark.parametrize("n_steps", [0, -3, 2.5, "5"])
def test_bad_step_count(n_steps: object) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(n_steps))):
        DiffusionSchedule(n_steps)  # type: ignore[arg-type]
