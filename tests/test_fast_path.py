"""The fast path computes the same functions as the plain reference path, to float tolerance."""

import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, GoalDictEnv, tiny_kwargs
from stable_baselines3.common.logger import configure
from stable_baselines3.common.utils import set_random_seed
from torch import nn
from torch.nn import functional as F

from sb3_qvpo import QVPO
from sb3_qvpo.diffusion import DiffusionSchedule, NoisePredictionNet, sample_actions, sample_actions_fast
from sb3_qvpo.diffusion.fast_ops import (
    FUSED_MISH_MIN_ELEMENTS,
    LayerRunner,
    fused_mish,
    mish_,
    run_layers_,
    split_linear_by_inputs,
)
from sb3_qvpo.qvpo.policies import candidate_min_q


def test_in_place_mish_matches_torch_mish() -> None:
    x = th.cat([th.linspace(-100.0, 100.0, 20_001), th.randn(10_000) * 5.0])
    expected = F.mish(x)
    result = mish_(x.clone())
    assert th.isfinite(result).all()
    th.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6)


def test_run_layers_matches_sequential_and_split_linear_adds_up() -> None:
    th.manual_seed(0)
    net = nn.Sequential(nn.Linear(7, 16), nn.Mish(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    x = th.randn(33, 7)
    with th.no_grad():
        th.testing.assert_close(run_layers_(net, x.clone()), net(x), rtol=1e-5, atol=1e-6)
        blocks = split_linear_by_inputs(net[0], [3, 4])
        split_sum = x[:, :3] @ blocks[0].t() + x[:, 3:] @ blocks[1].t() + net[0].bias
        th.testing.assert_close(split_sum, net[0](x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="do not add up"):
        split_linear_by_inputs(net[0], [3, 3])


@pytest.mark.parametrize("activation_fn", [nn.Mish, nn.ReLU])
@pytest.mark.parametrize("n_per_state", [1, 5])
@pytest.mark.parametrize("beta_schedule", ["cosine", "vp"])
def test_fast_sampler_matches_plain_sampler_with_the_same_noise(
    activation_fn: type[nn.Module], n_per_state: int, beta_schedule: str
) -> None:
    th.manual_seed(0)
    net = NoisePredictionNet(action_dim=3, features_dim=6, net_arch=[32, 32], activation_fn=activation_fn)
    schedule = DiffusionSchedule(8, beta_schedule)
    features = th.randn(9, 6)
    with th.no_grad():
        plain = sample_actions(net, schedule, features, th.Generator().manual_seed(7), n_per_state)
    fast = sample_actions_fast(net, schedule, features, th.Generator().manual_seed(7), n_per_state)
    assert fast.shape == plain.shape == (9 * n_per_state, 3)
    # The plain path repeats each state's features n_per_state times in a row: equality also
    # shows the fast path groups rows by state.
    th.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_fast_candidate_scoring_matches_plain() -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), seed=0, **tiny_kwargs())
    critic = model.critic
    features = th.randn(6, 3)
    candidates = th.rand(6 * 4, 2) * 2 - 1
    with th.no_grad():
        plain = candidate_min_q(critic, features, candidates, 4, fast_path=False)
        fast = candidate_min_q(critic, features, candidates, 4, fast_path=True)
    assert fast.shape == (6, 4)
    th.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def _trained_pair(env_factory, policy: str) -> tuple[QVPO, QVPO]:
    models = []
    for fast_path in (False, True):
        kwargs = tiny_kwargs()
        kwargs["policy_kwargs"]["fast_path"] = fast_path
        model = QVPO(policy, env_factory(), seed=3, **kwargs)
        model.set_logger(configure(None, [""]))
        models.append(model)
    return models[0], models[1]


def _gradients(module: nn.Module) -> list[th.Tensor]:
    return [param.grad.detach().clone() for param in module.parameters() if param.grad is not None]


@pytest.mark.parametrize("env_factory,policy", [(AsymmetricBoxEnv, "MlpPolicy"), (GoalDictEnv, "MultiInputPolicy")])
def test_fast_and_plain_updates_give_the_same_losses_and_gradients(env_factory, policy: str) -> None:
    """
    The critic step and the actor step, each from identical states with identical random draws.

    The plain model is trained first so that its critic tells candidates apart: at initialisation
    their Q values differ by about 1e-6, and rounding alone would flip which sample is best.
    Losses and gradients are compared, not parameters after the step: Adam divides each gradient
    by its own running magnitude, so float-level differences in near-zero gradients become
    parameter differences of about one learning rate, which says nothing about the fast path.
    """
    plain, fast = _trained_pair(env_factory, policy)
    plain.learn(250)
    for step in ("critic", "actor"):
        fast.set_parameters(plain.get_parameters())
        results = {}
        for name, model in (("plain", plain), ("fast", fast)):
            set_random_seed(11)
            replay_data = plain.replay_buffer.sample(32)
            if step == "critic":
                stats = model._critic_step(replay_data)
                results[name] = (stats["critic_loss"], stats["target_q"], _gradients(model.critic))
            else:
                stats = model._actor_step(replay_data.observations, entropy_coef=0.01)
                results[name] = (stats["actor_loss"], stats["sample_q_best"], _gradients(model.actor))
        (plain_loss, plain_stat, plain_grads), (fast_loss, fast_stat, fast_grads) = results["plain"], results["fast"]
        assert fast_loss.item() == pytest.approx(plain_loss.item(), rel=1e-5, abs=1e-7)
        assert fast_stat.item() == pytest.approx(plain_stat.item(), rel=1e-5, abs=1e-7)
        assert len(plain_grads) == len(fast_grads) > 0
        for plain_grad, fast_grad in zip(plain_grads, fast_grads, strict=True):
            th.testing.assert_close(fast_grad, plain_grad, rtol=1e-4, atol=1e-6)


def test_fast_and_plain_predict_the_same_deterministic_action() -> None:
    plain, fast = _trained_pair(AsymmetricBoxEnv, "MlpPolicy")
    fast.policy.load_state_dict(plain.policy.state_dict())
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    plain_actions, _ = plain.predict(obs, deterministic=True)
    fast_actions, _ = fast.predict(obs, deterministic=True)
    np.testing.assert_allclose(fast_actions, plain_actions, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layers", [[nn.Mish(), nn.Linear(16, 1)], [nn.Linear(8, 64), nn.Mish(), nn.Linear(64, 4), nn.ReLU()]])
def test_layer_runner_matches_modules_and_reuses_its_buffers(layers: list[nn.Module]) -> None:
    th.manual_seed(0)
    reference = nn.Sequential(*layers)
    in_width = 16 if isinstance(layers[0], nn.Mish) else 8
    runner = LayerRunner(layers, max_rows=300, reference=th.zeros(1))
    with th.no_grad():
        for n_rows in (300, 7, 300):  # a full, a partial and again a full chunk
            hidden = th.randn(n_rows, in_width)
            th.testing.assert_close(runner(hidden.clone()), reference(hidden), rtol=1e-5, atol=1e-6)


def test_fused_mish_matches_torch_mish_on_large_tensors() -> None:
    # Large enough for the compiled kernel (or its eager fallback), not torch's own Mish.
    x = th.randn(FUSED_MISH_MIN_ELEMENTS // 64 + 3, 64) * 8.0
    th.testing.assert_close(fused_mish(x.clone()), F.mish(x), rtol=1e-5, atol=1e-6)


def test_chunked_and_single_chunk_sampling_agree() -> None:
    th.manual_seed(0)
    net = NoisePredictionNet(action_dim=2, features_dim=4, net_arch=[64, 64])
    schedule = DiffusionSchedule(6)
    features = th.randn(40, 4)
    # 40 states x 32 samples = 1280 rows: above the small-batch path, several chunks of 256.
    whole = sample_actions_fast(net, schedule, features, th.Generator().manual_seed(1), 32, chunk_rows=None)
    chunked = sample_actions_fast(net, schedule, features, th.Generator().manual_seed(1), 32, chunk_rows=256)
    with th.no_grad():
        plain = sample_actions(net, schedule, features, th.Generator().manual_seed(1), 32)
    th.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    th.testing.assert_close(chunked, plain, rtol=1e-4, atol=1e-5)
