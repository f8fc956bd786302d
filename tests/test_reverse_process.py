"""
The shared core's sampler variants: QSM's reverse step (x_t clipped, variance beta_t) against its
closed form, the noise-free chain (DIPO's evaluation), fast path = reference for each, and the
Fourier time features and Xavier init that QSM's networks use.
"""

import math

import pytest
import torch as th
from torch import nn

from sb3_qvpo.diffusion import (
    BETA_XT_CLIPPED,
    POSTERIOR_X0_CLIPPED,
    DiffusionSchedule,
    LearnableFourierTimeEmbedding,
    NoisePredictionNet,
    ReverseProcess,
    get_reverse_process,
    sample_actions,
    sample_actions_fast,
    xavier_uniform_init,
)


class ConstantNoiseNet(nn.Module):
    """Predicts the same noise c for every input (a stub with the sampler's interface)."""

    def __init__(self, action_dim: int, value: float):
        super().__init__()
        self.action_dim = action_dim
        self.value = value

    def embed_time(self, t: th.Tensor) -> th.Tensor:
        return t.float().unsqueeze(-1)

    def forward(self, noisy_action: th.Tensor, time_features: th.Tensor, features: th.Tensor) -> th.Tensor:
        return th.full_like(noisy_action, self.value)


@pytest.mark.parametrize("name", ["vp", "cosine"])
def test_reverse_step_variances(name: str) -> None:
    schedule = DiffusionSchedule(6, name)
    beta = schedule.reverse_steps("beta", noise_scale=0.5)
    posterior = schedule.reverse_steps("posterior")
    for t in range(6):
        assert beta[t][:4] == posterior[t][:4] == schedule.reverse_coefficients[t][:4]
        assert beta[t][4] == pytest.approx(0.5 * math.sqrt(schedule.betas[t].item()), rel=1e-6)
        assert posterior[t][4] == schedule.reverse_coefficients[t][4]
    with pytest.raises(ValueError, match="'gamma'"):
        schedule.reverse_steps("gamma")
    with pytest.raises(ValueError, match="'gamma'"):
        ReverseProcess(variance="gamma")
    with pytest.raises(ValueError, match="'langevin'"):
        get_reverse_process("langevin")


@pytest.mark.parametrize("value", [0.3, 40.0])
def test_qsm_reverse_step_matches_its_closed_form(value: float) -> None:
    # QSM's ddpm_sampler: x <- (x - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + [t > 0] sqrt(beta_t) z, clipped.
    schedule = DiffusionSchedule(4, "vp")
    net = ConstantNoiseNet(2, value)
    features = th.zeros(7, 3)
    generator = th.Generator().manual_seed(5)
    actions = sample_actions(net, schedule, features, generator, process=BETA_XT_CLIPPED)  # type: ignore[arg-type]

    replay = th.Generator().manual_seed(5)
    x = th.randn(7, 2, generator=replay)
    for t in reversed(range(4)):
        beta, abar = schedule.betas[t], schedule.alphas_cumprod[t]
        x = (x - beta / th.sqrt(1 - abar) * value) / th.sqrt(1 - beta)
        if t > 0:
            x = x + th.sqrt(beta) * th.randn(7, 2, generator=replay)
        x = x.clamp(-1, 1)
    th.testing.assert_close(actions, x, rtol=1e-5, atol=1e-5)
    if value > 1:
        assert th.all(actions.abs() == 1)  # huge noise predictions are clipped at every step, not only at the end


def test_noise_free_chain_depends_only_on_the_first_draw() -> None:
    schedule = DiffusionSchedule(5, "cosine")
    net = NoisePredictionNet(2, 3, [16, 16], time_embedding_dim=8, time_hidden_dim=16)
    features = th.randn(4, 3)
    x_t = th.randn(4, 2, generator=th.Generator().manual_seed(1))
    # Same first draw (seed 1), the rest of the stream differs after it: identical noise-free chains.
    with th.no_grad():
        first = sample_actions(net, schedule, features, th.Generator().manual_seed(1), noise_scale=0.0)
        noisy = sample_actions(net, schedule, features, th.Generator().manual_seed(1), noise_scale=1.0)
        x = x_t
        for t in reversed(range(5)):
            recip, recipm1, coef_x0, coef_xt, _ = schedule.reverse_coefficients[t]
            eps = net(x, net.embed_time(th.tensor([t])), features)
            x = coef_x0 * (recip * x - recipm1 * eps).clamp(-1, 1) + coef_xt * x
    th.testing.assert_close(first, x.clamp(-1, 1), rtol=1e-5, atol=1e-6)
    assert not th.allclose(first, noisy)


@pytest.mark.parametrize("process", [POSTERIOR_X0_CLIPPED, BETA_XT_CLIPPED], ids=["x0_clipped", "xt_clipped"])
@pytest.mark.parametrize("noise_scale", [1.0, 0.0, 0.5])
@pytest.mark.parametrize("n_states", [3, 300])  # the small-batch chain and the chunked one
def test_fast_path_matches_reference(process: ReverseProcess, noise_scale: float, n_states: int) -> None:
    th.manual_seed(0)
    schedule = DiffusionSchedule(5, "vp")
    net = NoisePredictionNet(2, 3, [32, 32], time_embedding_dim=8, time_hidden_dim=16, time_features_dim=12)
    features = th.randn(n_states, 3)
    with th.no_grad():
        reference = sample_actions(net, schedule, features, th.Generator().manual_seed(3), 2, process, noise_scale)
        fast = sample_actions_fast(net, schedule, features, th.Generator().manual_seed(3), 2, -1, process, noise_scale)
    th.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)


def test_learnable_fourier_time_features() -> None:
    th.manual_seed(0)
    embedding = LearnableFourierTimeEmbedding(2048)
    kernel = embedding.kernel.detach()
    assert kernel.shape == (1024, 1)
    assert kernel.std().item() == pytest.approx(0.2, rel=0.1)
    t = th.tensor([0, 3])
    features = embedding(t)
    angles = 2 * math.pi * t.float().unsqueeze(-1) * kernel[:, 0]
    th.testing.assert_close(features, th.cat([angles.cos(), angles.sin()], dim=-1))
    assert any(p is embedding.kernel for p in embedding.parameters())  # learned
    with pytest.raises(ValueError, match="even"):
        LearnableFourierTimeEmbedding(7)


def test_noise_net_with_qsm_time_features_and_init() -> None:
    net = NoisePredictionNet(
        3, 5, [64, 64], time_embedding_dim=64, time_hidden_dim=128, time_features_dim=128,
        time_embedding="fourier", weight_init="xavier_uniform",
    )  # fmt: skip
    assert net.time_features_dim == 128
    assert net.embed_time(th.arange(5)).shape == (5, 128)
    first = net.body[0]
    assert isinstance(first, nn.Linear) and first.in_features == 3 + 128 + 5
    for layer in [*net.body, *net.time_mlp]:
        if isinstance(layer, nn.Linear):
            bound = math.sqrt(6 / (layer.in_features + layer.out_features))
            assert layer.weight.abs().max().item() <= bound
            assert layer.weight.abs().max().item() > 0.8 * bound
            assert th.all(layer.bias == 0)
    out = net(th.randn(4, 3), net.embed_time(th.tensor([2])), th.randn(4, 5))
    assert out.shape == (4, 3)
    with pytest.raises(ValueError, match="'learned'"):
        NoisePredictionNet(3, 5, [8], time_embedding="learned")
    with pytest.raises(ValueError, match="'orthogonal'"):
        NoisePredictionNet(3, 5, [8], weight_init="orthogonal")
    layer = nn.Linear(4, 4)
    xavier_uniform_init(layer)
    assert th.all(layer.bias == 0)
