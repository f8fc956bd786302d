"""The DDPM reverse chain, the forward process and the denoising loss."""

import math

import numpy as np
import pytest
import torch as th
from torch import nn

from sb3_qvpo.diffusion import (
    DiffusionSchedule,
    NoisePredictionNet,
    SinusoidalTimeEmbedding,
    add_noise,
    denoising_errors,
    sample_actions,
    truncated_normal_init,
)


def make_net(action_dim: int = 2, features_dim: int = 3, seed: int = 0) -> NoisePredictionNet:
    th.manual_seed(seed)
    return NoisePredictionNet(action_dim, features_dim, [32, 32], time_embedding_dim=8, time_hidden_dim=16)


def generator(seed: int) -> th.Generator:
    gen = th.Generator()
    gen.manual_seed(seed)
    return gen


class HugeNoiseNet(nn.Module):
    """A stub with the sampler's interface whose noise predictions are enormous, of alternating sign."""

    def __init__(self, action_dim: int, value: float):
        super().__init__()
        self.action_dim = action_dim
        self.value = value

    def embed_time(self, t: th.Tensor) -> th.Tensor:
        return t.float().unsqueeze(-1)

    def forward(self, noisy_action: th.Tensor, time_features: th.Tensor, features: th.Tensor) -> th.Tensor:
        sign = th.where(th.arange(noisy_action.shape[0]) % 2 == 0, 1.0, -1.0).unsqueeze(-1)
        return self.value * sign * th.ones_like(noisy_action)


class OracleNoiseNet(nn.Module):
    """
    Predicts exactly the noise that turns x0 (passed as the features) into x_t: the stub
    embeds the step index itself so the forward pass can look up alpha_bar_t.
    """

    def __init__(self, schedule: DiffusionSchedule, action_dim: int):
        super().__init__()
        self.schedule = schedule
        self.action_dim = action_dim

    def embed_time(self, t: th.Tensor) -> th.Tensor:
        return t.float().unsqueeze(-1)

    def forward(self, noisy_action: th.Tensor, time_features: th.Tensor, features: th.Tensor) -> th.Tensor:
        t = time_features.expand(noisy_action.shape[0], -1)[:, 0].long()
        sqrt_abar = self.schedule.sqrt_alphas_cumprod[t].unsqueeze(-1)
        sqrt_one_minus = self.schedule.sqrt_one_minus_alphas_cumprod[t].unsqueeze(-1)
        return (noisy_action - sqrt_abar * features) / sqrt_one_minus


class RecordingNoiseNet(nn.Module):
    """Predicts zero noise and records the step index each call is conditioned on."""

    def __init__(self, action_dim: int):
        super().__init__()
        self.action_dim = action_dim
        self.steps: list[list[int]] = []

    def embed_time(self, t: th.Tensor) -> th.Tensor:
        return t.float().unsqueeze(-1)

    def forward(self, noisy_action: th.Tensor, time_features: th.Tensor, features: th.Tensor) -> th.Tensor:
        self.steps.append(sorted({int(v) for v in time_features[:, 0].tolist()}))
        return th.zeros_like(noisy_action)


@pytest.mark.parametrize("n_steps", [1, 4, 10])
def test_reverse_chain_visits_every_step_once_in_order(n_steps: int) -> None:
    stub = RecordingNoiseNet(action_dim=2)
    sample_actions(stub, DiffusionSchedule(n_steps), th.zeros(6, 1))  # type: ignore[arg-type]
    assert stub.steps == [[t] for t in reversed(range(n_steps))]


@pytest.mark.parametrize("beta_schedule", ["cosine", "linear", "vp"])
@pytest.mark.parametrize("n_steps", [1, 5])
def test_sample_shape_and_bounds(beta_schedule: str, n_steps: int) -> None:
    net = make_net()
    schedule = DiffusionSchedule(n_steps, beta_schedule)
    with th.no_grad():
        actions = sample_actions(net, schedule, th.randn(17, 3))
    assert actions.shape == (17, 2)
    assert actions.dtype == th.float32
    assert th.all(actions.abs() <= 1.0)
    assert th.all(th.isfinite(actions))


def test_sample_bounds_with_scaled_last_layer() -> None:
    net = make_net()
    with th.no_grad():
        net.body[-1].weight.mul_(1000.0)
        net.body[-1].bias.fill_(50.0)
        actions = sample_actions(net, DiffusionSchedule(5), 10.0 * th.randn(256, 3))
    assert actions.shape == (256, 2)
    assert th.all(actions.abs() <= 1.0)
    assert th.all(th.isfinite(actions))


@pytest.mark.parametrize("value", [1e6, 1e30, math.inf])
@pytest.mark.parametrize("beta_schedule", ["cosine", "linear", "vp"])
def test_sample_bounds_with_huge_noise_predictions(value: float, beta_schedule: str) -> None:
    stub = HugeNoiseNet(action_dim=3, value=value)
    actions = sample_actions(stub, DiffusionSchedule(5, beta_schedule), th.zeros(64, 1))  # type: ignore[arg-type]
    assert actions.shape == (64, 3)
    assert th.all(th.isfinite(actions))
    assert th.all(actions.abs() <= 1.0)


def test_seeded_generator_reproducible_and_leaves_global_rng_alone() -> None:
    net = make_net()
    schedule = DiffusionSchedule(5)
    features = th.randn(32, 3)
    state = th.get_rng_state()
    with th.no_grad():
        first = sample_actions(net, schedule, features, generator(123))
        second = sample_actions(net, schedule, features, generator(123))
        other = sample_actions(net, schedule, features, generator(124))
    assert th.equal(th.get_rng_state(), state)
    assert th.equal(first, second)
    assert not th.allclose(first, other)


def test_global_rng_sampling_varies() -> None:
    net = make_net()
    schedule = DiffusionSchedule(5)
    features = th.randn(32, 3)
    with th.no_grad():
        th.manual_seed(1)
        first = sample_actions(net, schedule, features)
        second = sample_actions(net, schedule, features)
        th.manual_seed(1)
        again = sample_actions(net, schedule, features)
    assert not th.allclose(first, second)
    assert th.equal(first, again)


@pytest.mark.parametrize("beta_schedule", ["cosine", "linear", "vp"])
def test_oracle_noise_prediction_recovers_x0(beta_schedule: str) -> None:
    schedule = DiffusionSchedule(8, beta_schedule)
    x0 = 2.0 * th.rand(50, 2) - 1.0
    oracle = OracleNoiseNet(schedule, action_dim=2)
    # The exact noise gives back the clean point: the chain ends on the predicted x0, without noise.
    actions = sample_actions(oracle, schedule, x0, generator(0))  # type: ignore[arg-type]
    th.testing.assert_close(actions, x0, rtol=0, atol=1e-4)
    # And its denoising error is zero at every step.
    errors = denoising_errors(oracle, schedule, x0, x0, generator(1))  # type: ignore[arg-type]
    assert errors.shape == (50,)
    assert errors.max().item() < 1e-8


@pytest.mark.parametrize("beta_schedule", ["cosine", "linear", "vp"])
def test_add_noise_closed_form(beta_schedule: str) -> None:
    n_steps = 10
    schedule = DiffusionSchedule(n_steps, beta_schedule)
    x0 = th.randn(40, 3)
    noise = th.randn(40, 3)
    t = th.randint(0, n_steps, (40,))
    betas = schedule.betas.double().numpy()
    abar = np.cumprod(1.0 - betas)[t.numpy()][:, None]
    expected = np.sqrt(abar) * x0.double().numpy() + np.sqrt(1.0 - abar) * noise.double().numpy()
    np.testing.assert_allclose(add_noise(schedule, x0, t, noise).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_denoising_errors_closed_form() -> None:
    net = make_net()
    schedule = DiffusionSchedule(5)
    actions = 2.0 * th.rand(30, 2) - 1.0
    features = th.randn(30, 3)
    with th.no_grad():
        errors = denoising_errors(net, schedule, actions, features, generator(7))
        gen = generator(7)
        t = th.randint(0, 5, (30,), generator=gen)
        noise = th.randn(actions.shape, generator=gen)
        noisy = schedule.sqrt_alphas_cumprod[t, None] * actions + schedule.sqrt_one_minus_alphas_cumprod[t, None] * noise
        expected = ((net(noisy, net.embed_time(t), features) - noise) ** 2).mean(dim=1)
    assert errors.shape == (30,)
    assert th.all(errors >= 0)
    th.testing.assert_close(errors, expected)


def test_denoising_errors_are_differentiable() -> None:
    net = make_net()
    errors = denoising_errors(net, DiffusionSchedule(5), th.zeros(8, 2), th.randn(8, 3))
    errors.mean().backward()
    assert net.body[0].weight.grad is not None
    assert net.time_mlp[1].weight.grad is not None
    assert th.all(th.isfinite(net.body[0].weight.grad))


def test_time_embedding() -> None:
    embedding = SinusoidalTimeEmbedding(8)
    t = th.tensor([0, 1, 7])
    features = embedding(t)
    assert features.shape == (3, 8)
    # [sin, cos] halves: at t = 0 all sines are 0 and all cosines 1.
    th.testing.assert_close(features[0], th.tensor([0.0] * 4 + [1.0] * 4))
    th.testing.assert_close(features[:, :4] ** 2 + features[:, 4:] ** 2, th.ones(3, 4))
    # The first frequency is 1 and the last 1 / 10000.
    th.testing.assert_close(embedding.frequencies[[0, -1]], th.tensor([1.0, 1e-4]))
    assert embedding.state_dict() == {}
    for bad in (2, 7):
        with pytest.raises(ValueError, match=str(bad)):
            SinusoidalTimeEmbedding(bad)


def test_noise_net_shapes_and_init() -> None:
    net = make_net(action_dim=2, features_dim=3)
    out = net(th.randn(5, 2), net.embed_time(th.tensor([3])), th.randn(5, 3))
    assert out.shape == (5, 2)
    out_per_row = net(th.randn(5, 2), net.embed_time(th.arange(5)), th.randn(5, 3))
    assert out_per_row.shape == (5, 2)
    for module in net.modules():
        if isinstance(module, nn.Linear):
            std = 1.0 / (2.0 * math.sqrt(module.in_features))
            assert module.weight.abs().max().item() <= 2.0 * std + 1e-7
            assert th.all(module.bias == 0)
    with pytest.raises(ValueError, match="hidden layer"):
        NoisePredictionNet(2, 3, [])


def test_truncated_normal_init_ignores_other_modules() -> None:
    layer_norm = nn.LayerNorm(4)
    before = layer_norm.weight.clone()
    truncated_normal_init(layer_norm)
    assert th.equal(layer_norm.weight, before)


def train_denoiser(
    data: th.Tensor, features: th.Tensor, n_steps: int = 10, iterations: int = 400, seed: int = 0
) -> tuple[NoisePredictionNet, DiffusionSchedule]:
    th.manual_seed(seed)
    schedule = DiffusionSchedule(n_steps)
    net = NoisePredictionNet(data.shape[1], features.shape[1], [64, 64], time_embedding_dim=16, time_hidden_dim=64)
    optimizer = th.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(iterations):
        index = th.randint(0, data.shape[0], (256,))
        loss = denoising_errors(net, schedule, data[index], features[index]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net, schedule


def test_ddpm_learns_a_point_mass() -> None:
    data = th.full((512, 2), 0.5)
    features = th.zeros(512, 1)
    net, schedule = train_denoiser(data, features)
    with th.no_grad():
        samples = sample_actions(net, schedule, th.zeros(1000, 1), generator(0))
    assert (samples - 0.5).abs().mean().item() < 0.1


def test_ddpm_learns_a_conditional_two_point_distribution() -> None:
    # State +1: actions at +-0.6 in the first dimension; state -1: actions at -0.2 in both.
    n = 1024
    features = th.where(th.arange(n) % 2 == 0, 1.0, -1.0).unsqueeze(-1)
    signs = th.where(th.arange(n) % 4 == 0, 0.6, -0.6)
    data = th.where(features > 0, th.stack([signs, th.zeros(n)], dim=1), th.full((n, 2), -0.2))
    net, schedule = train_denoiser(data, features, n_steps=20, iterations=1000)
    with th.no_grad():
        positive = sample_actions(net, schedule, th.ones(1000, 1), generator(0))
        negative = sample_actions(net, schedule, -th.ones(1000, 1), generator(1))
    # State +1: each sample is near one of the two points, and both points are used.
    distance_to_modes = th.minimum((positive[:, 0] - 0.6).abs(), (positive[:, 0] + 0.6).abs())
    assert distance_to_modes.mean().item() < 0.1
    assert positive[:, 1].abs().mean().item() < 0.1
    fraction_right = (positive[:, 0] > 0).float().mean().item()
    assert 0.25 < fraction_right < 0.75
    # State -1: the single point.
    assert (negative + 0.2).abs().mean().item() < 0.1
