"""The QVPO algorithm: argument checks, learning loops, logging, save/load, optimisers and targets."""

import csv
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from helpers import AsymmetricBoxEnv, GoalDictEnv, tiny_kwargs
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch.nn import functional as F

import sb3_qvpo.qvpo.qvpo as qvpo_module
from sb3_qvpo import QVPO
from sb3_qvpo.common.checks import check_action_space
from sb3_qvpo.qvpo.entropy import FlooredLinearSchedule

# --- argument checks ---------------------------------------------------------------------------


class SpaceEnv(gym.Env):
    """A one-step env with the given action space."""

    def __init__(self, action_space: spaces.Space):
        super().__init__()
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


@pytest.mark.parametrize(
    "action_space",
    [spaces.Discrete(3), spaces.MultiDiscrete([2, 3]), spaces.MultiBinary(4)],
    ids=["Discrete", "MultiDiscrete", "MultiBinary"],
)
def test_rejects_non_box_action_spaces(action_space: spaces.Space) -> None:
    with pytest.raises(ValueError, match=r"continuous \(Box\) action space"):
        QVPO("MlpPolicy", SpaceEnv(action_space), **tiny_kwargs())
    with pytest.raises(ValueError, match=type(action_space).__name__):
        check_action_space(action_space)


def test_rejects_discrete_gym_id() -> None:
    with pytest.raises(ValueError, match=r"Box"):
        QVPO("MlpPolicy", "CartPole-v1", **tiny_kwargs())


@pytest.mark.parametrize(
    ("low", "high"),
    [(-np.inf, np.inf), (np.array([-1.0, -np.inf]), np.array([1.0, 1.0])), (np.array([-1.0, -1.0]), np.array([1.0, np.inf]))],
)
def test_rejects_unbounded_box(low: Any, high: Any) -> None:
    space = spaces.Box(low=np.float32(low), high=np.float32(high), shape=(2,), dtype=np.float32)
    with pytest.raises(ValueError, match="finite bounds"):
        QVPO("MlpPolicy", SpaceEnv(space), **tiny_kwargs())


def test_rejects_unbounded_box_in_vec_env() -> None:
    space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
    with pytest.raises(ValueError, match="finite bounds"):
        QVPO("MlpPolicy", make_vec_env(lambda: SpaceEnv(space), n_envs=2), **tiny_kwargs())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(n_action_samples=0), "n_action_samples"),
        (dict(n_behavior_samples=0), "n_behavior_samples"),
        (dict(n_target_samples=0), "n_target_samples"),
        (dict(n_eval_samples=0), "n_eval_samples"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=True), "batch_size"),
        (dict(n_action_samples=2.0), "n_action_samples"),
        (dict(n_uniform_samples=-1), "n_uniform_samples"),
        (dict(weight_transform="foo"), "'foo'"),
        (dict(entropy_coef=-1), "entropy_coef"),
        (dict(entropy_coef="bogus"), "entropy_coef"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(max_grad_norm=-1.0), "max_grad_norm"),
        (dict(policy_kwargs=dict(beta_schedule="foo")), "'foo'"),
        (dict(policy_kwargs=dict(n_diffusion_steps=0)), "n_diffusion_steps"),
        (dict(policy_kwargs=dict(n_critics=0)), "n_critics"),
        (dict(policy_kwargs=dict(n_behavior_samples=2)), "n_behavior_samples"),
        (dict(policy_kwargs=dict(n_eval_samples=2)), "n_eval_samples"),
    ],
)
def test_rejects_bad_arguments(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QVPO("MlpPolicy", "Pendulum-v1", **tiny_kwargs(**overrides))


def test_accepts_edge_arguments() -> None:
    model = QVPO("MlpPolicy", "Pendulum-v1", **tiny_kwargs(n_uniform_samples=0, entropy_coef=0, n_action_samples=1))
    assert model.n_uniform_samples == 0
    assert model.entropy_coef_schedule(0.5) == 0.0


@pytest.mark.parametrize("net_arch", [[], dict(pi=[], qf=[8])])
def test_rejects_empty_actor_arch(net_arch: Any) -> None:
    # Regression: this used to crash with an IndexError.
    with pytest.raises(ValueError, match="hidden layer"):
        QVPO("MlpPolicy", "Pendulum-v1", **tiny_kwargs(policy_kwargs=dict(net_arch=net_arch)))


@pytest.mark.parametrize("entropy_coef", [math.nan, math.inf, "lin_nan", "lin_inf"])
def test_rejects_non_finite_entropy_coef(entropy_coef: Any) -> None:
    # Regression: these were accepted and turned the actor loss into NaN.
    with pytest.raises(ValueError, match="entropy_coef"):
        QVPO("MlpPolicy", "Pendulum-v1", **tiny_kwargs(entropy_coef=entropy_coef))


# --- learning loops and logging ----------------------------------------------------------------

TRAIN_KEYS = (
    "train/actor_loss",
    "train/critic_loss",
    "train/q_values",
    "train/target_q",
    "train/positive_weight_fraction",
    "train/weight_mean",
    "train/sample_q_mean",
    "train/sample_q_best",
    "train/entropy_coef",
    "train/n_updates",
    "train/learning_rate",
    "train/actor_learning_rate",
)


def read_progress(folder: Path) -> list[dict[str, str]]:
    with open(folder / "progress.csv", newline="") as file:
        return list(csv.DictReader(file))


def check_logged_training(folder: Path, model: QVPO) -> None:
    rows = read_progress(folder)
    trained = [row for row in rows if row.get("train/n_updates")]
    assert trained, f"no training row in progress.csv; columns: {list(rows[0]) if rows else None}"
    for key in TRAIN_KEYS:
        values = [float(row[key]) for row in trained]
        assert all(math.isfinite(value) for value in values), key
    last = trained[-1]
    assert 0.0 <= float(last["train/positive_weight_fraction"]) <= 1.0
    assert float(last["train/weight_mean"]) >= 0.0
    assert float(last["train/sample_q_best"]) >= float(last["train/sample_q_mean"]) - 1e-6
    assert 0 < int(float(last["train/n_updates"])) <= model._n_updates


@pytest.mark.parametrize(
    ("n_envs", "train_freq", "gradient_steps"),
    [(1, 1, 1), (2, 1, 1), (1, 4, 2), (2, 2, -1), (1, (1, "episode"), -1)],
)
def test_learn_box_observations(tmp_path: Path, n_envs: int, train_freq: Any, gradient_steps: int) -> None:
    env = make_vec_env("Pendulum-v1", n_envs=n_envs, seed=0)
    model = QVPO("MlpPolicy", env, train_freq=train_freq, gradient_steps=gradient_steps, seed=0, **tiny_kwargs())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(220 * n_envs, log_interval=1)
    assert model.num_timesteps >= 220 * n_envs
    assert model._n_updates > 0
    check_logged_training(tmp_path, model)
    actions, _ = model.predict(env.reset(), deterministic=True)
    assert actions.shape == (n_envs, 1)
    assert np.all(np.abs(actions) <= 2.0)


def test_update_count() -> None:
    # One update per step after learning_starts: steps 51..300 train once each (2 steps each with gradient_steps=2).
    model = QVPO("MlpPolicy", "Pendulum-v1", gradient_steps=2, seed=0, **tiny_kwargs())
    model.learn(300)
    assert model._n_updates == 2 * (300 - 50)


@pytest.mark.parametrize("n_envs", [1, 2])
def test_learn_dict_observations(tmp_path: Path, n_envs: int) -> None:
    env = make_vec_env(GoalDictEnv, n_envs=n_envs, seed=0)
    model = QVPO("MultiInputPolicy", env, seed=0, **tiny_kwargs())
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(150, log_interval=1)
    assert model._n_updates > 0
    check_logged_training(tmp_path, model)
    actions, _ = model.predict(env.reset(), deterministic=False)
    assert actions.shape == (n_envs, 2)
    assert np.all(np.abs(actions) <= 1.0)


def test_learn_with_n_step_returns() -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), n_steps=3, seed=0, **tiny_kwargs())
    model.learn(120)
    assert model._n_updates > 0
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_learn_with_string_env_and_qcut() -> None:
    model = QVPO("MlpPolicy", "Pendulum-v1", weight_transform="qcut", qcut_threshold=-100.0, seed=0, **tiny_kwargs())
    model.learn(100)
    assert model._n_updates == 50


def test_learn_with_shared_features_extractor() -> None:
    model = QVPO(
        "MlpPolicy",
        AsymmetricBoxEnv(),
        seed=0,
        **tiny_kwargs(policy_kwargs=dict(net_arch=[16], share_features_extractor=True)),
    )
    model.learn(100)
    assert model.critic.features_extractor is model.actor.features_extractor
    assert model._n_updates > 0


# --- the critic step ---------------------------------------------------------------------------


def test_critic_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), gamma=0.9, n_target_samples=3, seed=0, **tiny_kwargs())
    batch = 8
    next_q = th.linspace(-1.0, 2.0, batch)
    calls: list[tuple[Any, ...]] = []

    def fake_best_of_k(
        actor: Any, critic: Any, obs: th.Tensor, n_samples: int, generator: Any = None
    ) -> tuple[th.Tensor, th.Tensor]:
        calls.append((actor, critic, obs, n_samples))
        return th.zeros(obs.shape[0], 2), next_q

    monkeypatch.setattr(qvpo_module, "best_of_k", fake_best_of_k)
    samples = ReplayBufferSamples(
        observations=th.randn(batch, 3),
        actions=2 * th.rand(batch, 2) - 1,
        next_observations=th.randn(batch, 3),
        dones=(th.arange(batch) % 3 == 0).float().unsqueeze(1),
        rewards=th.randn(batch, 1),
    )
    with th.no_grad():
        current = model.critic(samples.observations, samples.actions)
    stats = model._critic_step(samples)

    (actor, critic, obs, n_samples) = calls[0]
    assert actor is model.actor_target and critic is model.critic_target
    assert th.equal(obs, samples.next_observations) and n_samples == 3
    target = samples.rewards + (1 - samples.dones) * 0.9 * next_q.unsqueeze(1)
    assert stats["target_q"].item() == pytest.approx(target.mean().item(), rel=1e-6)
    expected_loss = sum(F.mse_loss(q, target) for q in current)
    assert stats["critic_loss"].item() == pytest.approx(float(expected_loss), rel=1e-5)
    assert stats["q_values"].item() == pytest.approx(current[0].mean().item(), rel=1e-5)

    # n-step samples carry their own discounts.
    discounts = th.full((batch, 1), 0.5)
    model._critic_step(samples._replace(discounts=discounts))
    calls.clear()
    stats = model._critic_step(samples._replace(discounts=discounts))
    target = samples.rewards + (1 - samples.dones) * 0.5 * next_q.unsqueeze(1)
    assert stats["target_q"].item() == pytest.approx(target.mean().item(), rel=1e-6)


def test_critic_regresses_towards_targets() -> None:
    # Repeated steps on a fixed batch reduce the TD error: the critic learns.
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), learning_rate=3e-3, seed=0, **tiny_kwargs())
    samples = ReplayBufferSamples(
        observations=th.randn(32, 3),
        actions=2 * th.rand(32, 2) - 1,
        next_observations=th.randn(32, 3),
        dones=th.ones(32, 1),  # terminal: the target is the reward alone
        rewards=th.randn(32, 1),
    )
    first = model._critic_step(samples)["critic_loss"].item()
    for _ in range(150):
        last = model._critic_step(samples)["critic_loss"].item()
    assert last < 0.2 * first


# --- targets, optimisers, gradient clipping ----------------------------------------------------


def model_with_data(**overrides: Any) -> QVPO:
    """A model whose buffer holds learning_starts transitions, with no update done yet."""
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), seed=0, **tiny_kwargs(**overrides))
    model.learn(50)
    assert model._n_updates == 0
    return model


def snapshot(module: th.nn.Module) -> list[th.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.0])
def test_polyak_update(tau: float) -> None:
    model = model_with_data(tau=tau)
    # Make the targets differ from the online networks first.
    with th.no_grad():
        for p in [*model.actor_target.parameters(), *model.critic_target.parameters()]:
            p.add_(0.1)
    actor_target_before, critic_target_before = snapshot(model.actor_target), snapshot(model.critic_target)
    actor_before, critic_before = snapshot(model.actor), snapshot(model.critic)
    model.train(gradient_steps=1, batch_size=32)
    assert model._n_updates == 1
    for online, before, target, target_before in (
        (model.actor, actor_before, model.actor_target, actor_target_before),
        (model.critic, critic_before, model.critic_target, critic_target_before),
    ):
        after = snapshot(online)
        assert any(not th.equal(a, b) for a, b in zip(after, before, strict=True)), "the online network did not change"
        for new_target, old_target, online_param in zip(target.parameters(), target_before, after, strict=True):
            expected = (1 - tau) * old_target + tau * online_param
            if tau in (0.0, 1.0):
                assert th.equal(new_target, expected)
            else:
                th.testing.assert_close(new_target, expected)


def test_default_learning_rates_and_eps() -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), seed=0, **tiny_kwargs())
    for optimizer in (model.actor.optimizer, model.critic.optimizer):
        assert isinstance(optimizer, th.optim.Adam)
        assert optimizer.param_groups[0]["eps"] == 1e-5
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    model.learn(80)
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)


def test_separate_learning_rates() -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), actor_learning_rate=1e-3, learning_rate=5e-4, seed=0, **tiny_kwargs())
    model.learn(80)
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_learning_rate_schedules() -> None:
    def actor_schedule(progress: float) -> float:
        return 1e-3 * progress

    def critic_schedule(progress: float) -> float:
        return 2e-3 * progress + 1e-5

    model = QVPO(
        "MlpPolicy", AsymmetricBoxEnv(), actor_learning_rate=actor_schedule, learning_rate=critic_schedule, **tiny_kwargs()
    )
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    model.learn(100)
    progress = model._current_progress_remaining
    assert 0.0 <= progress < 0.05
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(actor_schedule(progress))
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(critic_schedule(progress))


@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
def test_gradient_clipping_calls(monkeypatch: pytest.MonkeyPatch, max_grad_norm: float | None) -> None:
    overrides = {} if max_grad_norm is None else {"max_grad_norm": max_grad_norm}
    model = model_with_data(**overrides)
    calls: list[tuple[set[int], float]] = []
    original = th.nn.utils.clip_grad_norm_

    def recording_clip(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> th.Tensor:
        parameters = list(parameters)
        calls.append(({id(p) for p in parameters}, max_norm))
        return original(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(th.nn.utils, "clip_grad_norm_", recording_clip)
    model.train(gradient_steps=2, batch_size=32)
    expected_norm = 2.0 if max_grad_norm is None else max_grad_norm
    actor_ids = {id(p) for p in model.actor.parameters()}
    critic_ids = {id(p) for p in model.critic.parameters()}
    assert [ids for ids, _ in calls] == [critic_ids, actor_ids, critic_ids, actor_ids]
    assert all(norm == expected_norm for _, norm in calls)


def test_gradient_clipping_limits_the_step() -> None:
    # Adam's first step moves each parameter by about lr * g / (|g| + eps); clipping the gradient
    # norm to 1e-8, far below eps = 1e-5, shrinks every step to under 0.1 % of lr.
    lr = 1e-3
    changes = {}
    for max_grad_norm in (1e-8, 1e6):
        model = model_with_data(max_grad_norm=max_grad_norm, actor_learning_rate=lr, learning_rate=lr)
        actor_before, critic_before = snapshot(model.actor), snapshot(model.critic)
        model.train(gradient_steps=1, batch_size=32)
        changes[max_grad_norm] = [
            max((a - b).abs().max().item() for a, b in zip(snapshot(net), before, strict=True))
            for net, before in ((model.actor, actor_before), (model.critic, critic_before))
        ]
    assert all(change < 1e-3 * lr for change in changes[1e-8])
    assert all(change > 0.5 * lr for change in changes[1e6])


# --- save / load -------------------------------------------------------------------------------


def test_schedule_not_in_state_dict() -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), **tiny_kwargs())
    keys = list(model.policy.state_dict())
    assert keys
    assert not any("schedule" in key for key in keys)
    assert any("noise_net" in key for key in keys)


@pytest.fixture(scope="module")
def trained_and_loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[QVPO, QVPO, Path]:
    kwargs = tiny_kwargs(
        n_action_samples=6,
        n_behavior_samples=3,
        n_target_samples=2,
        n_eval_samples=5,
        entropy_coef="lin_0.03_0.001",
        max_grad_norm=1.5,
        policy_kwargs=dict(net_arch=[32, 32], n_diffusion_steps=4, beta_schedule="vp"),
    )
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), seed=3, **kwargs)
    model.learn(250)
    path = tmp_path_factory.mktemp("qvpo") / "model.zip"
    model.save(path)
    return model, QVPO.load(path), path


def test_load_restores_hyperparameters(trained_and_loaded: tuple[QVPO, QVPO, Path]) -> None:
    model, loaded, _ = trained_and_loaded
    for name in ("n_action_samples", "n_uniform_samples", "n_behavior_samples", "n_target_samples", "n_eval_samples"):
        assert getattr(loaded, name) == getattr(model, name), name
    assert loaded.n_action_samples == 6 and loaded.n_eval_samples == 5
    assert loaded.policy.n_behavior_samples == 3 and loaded.policy.n_eval_samples == 5
    assert loaded.max_grad_norm == 1.5 and loaded.weight_transform == "qadv"
    assert loaded.entropy_coef == "lin_0.03_0.001"
    assert isinstance(loaded.entropy_coef_schedule, FlooredLinearSchedule)
    assert loaded.entropy_coef_schedule(0.5) == pytest.approx(0.015)
    assert loaded.entropy_coef_schedule(0.0) == pytest.approx(0.001)
    assert loaded.actor.schedule.beta_schedule == "vp" and loaded.actor.schedule.n_steps == 4
    for name in ("betas", "alphas_cumprod", "posterior_std"):
        assert th.equal(getattr(loaded.actor.schedule, name), getattr(model.actor.schedule, name))
    assert loaded.actor.schedule.reverse_coefficients == model.actor.schedule.reverse_coefficients


def test_load_restores_parameters_and_optimizers(trained_and_loaded: tuple[QVPO, QVPO, Path]) -> None:
    model, loaded, _ = trained_and_loaded
    state, loaded_state = model.policy.state_dict(), loaded.policy.state_dict()
    assert state.keys() == loaded_state.keys()
    for key, value in state.items():
        assert th.equal(value, loaded_state[key]), key
    # The references the algorithm keeps point into the loaded policy.
    assert loaded.actor is loaded.policy.actor and loaded.critic_target is loaded.policy.critic_target
    for name in ("actor", "critic"):
        optimizer, loaded_optimizer = getattr(model, name).optimizer, getattr(loaded, name).optimizer
        assert loaded_optimizer.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])
        assert loaded_optimizer.param_groups[0]["eps"] == 1e-5
        for param_state, loaded_param_state in zip(
            optimizer.state_dict()["state"].values(), loaded_optimizer.state_dict()["state"].values(), strict=True
        ):
            assert th.equal(param_state["exp_avg"], loaded_param_state["exp_avg"])
    assert loaded.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert loaded.critic.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)


def test_load_predicts_the_same(trained_and_loaded: tuple[QVPO, QVPO, Path]) -> None:
    model, loaded, _ = trained_and_loaded
    obs = np.random.default_rng(0).uniform(-1, 1, size=(20, 3)).astype(np.float32)
    before, _ = model.predict(obs, deterministic=True)
    after, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(before, after)
    for k in (0, 7):
        th.manual_seed(k)
        before, _ = model.predict(obs, deterministic=False)
        th.manual_seed(k)
        after, _ = loaded.predict(obs, deterministic=False)
        np.testing.assert_array_equal(before, after)


def test_loaded_model_keeps_learning(trained_and_loaded: tuple[QVPO, QVPO, Path]) -> None:
    _, _, path = trained_and_loaded
    loaded = QVPO.load(path, env=AsymmetricBoxEnv())
    updates = loaded._n_updates
    assert updates == 200
    loaded.learn(60, reset_num_timesteps=False)
    assert loaded._n_updates == updates + 60
    # The optimizers still drive the loaded parameters.
    actor_ids = {id(p) for group in loaded.actor.optimizer.param_groups for p in group["params"]}
    assert actor_ids == {id(p) for p in loaded.actor.parameters()}


def test_save_load_callable_entropy_schedule(tmp_path: Path) -> None:
    model = QVPO("MlpPolicy", AsymmetricBoxEnv(), entropy_coef=FlooredLinearSchedule(0.05, 0.01), **tiny_kwargs())
    model.save(tmp_path / "model.zip")
    loaded = QVPO.load(tmp_path / "model.zip")
    assert loaded.entropy_coef_schedule(1.0) == pytest.approx(0.05)
    assert loaded.entropy_coef_schedule(0.0) == pytest.approx(0.01)


def test_save_load_dict_observations(tmp_path: Path) -> None:
    model = QVPO("MultiInputPolicy", GoalDictEnv(), seed=0, **tiny_kwargs())
    model.learn(80)
    model.save(tmp_path / "model.zip")
    loaded = QVPO.load(tmp_path / "model.zip", env=GoalDictEnv())
    obs = {"observation": np.zeros((3, 3), np.float32), "desired_goal": np.full((3, 2), 0.5, np.float32)}
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    loaded.learn(20, reset_num_timesteps=False)
