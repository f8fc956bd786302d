"""
Acting with S < T denoising steps (``n_acting_steps``): the trained schedule seen at S evenly spaced
steps, DDIM's sampler with eta = 1 in closed form; S = T is today's chain bit for bit; the eager,
fast, compiled and exported chains agree; training's chains keep T; bad values are refused.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from helpers import AsymmetricBoxEnv, baseline_kwargs, tiny_kwargs

from sb3_qvpo import CGPO, DIPO, QSM, QVPO, DiffusionQL
from sb3_qvpo.common.actor import DiffusionActor
from sb3_qvpo.diffusion import DiffusionSchedule, NoisePredictionNet, sample_actions, sample_actions_fast
from sb3_qvpo.diffusion.schedules import strided_timesteps

ALGORITHMS = {"QVPO": QVPO, "QSM": QSM, "DIPO": DIPO, "DiffusionQL": DiffusionQL, "CGPO": CGPO}


def seeded_observations(space: Any, n: int, seed: int = 0) -> np.ndarray:
    """n observations drawn from ``space`` with its own generator seeded: the same in every run."""
    space.seed(seed)
    return np.stack([space.sample() for _ in range(n)])


def make(name: str, env: Any = "Pendulum-v1", **policy_kwargs: Any) -> Any:
    """A tiny model (T = 5) of the algorithm called ``name``, ``policy_kwargs`` added to its policy's."""
    kwargs = tiny_kwargs() if name == "QVPO" else baseline_kwargs(name)
    kwargs["policy_kwargs"].update(policy_kwargs)
    return ALGORITHMS[name]("MlpPolicy", env, seed=0, **kwargs)


def test_strided_steps_are_evenly_spaced_from_0_to_T_minus_1() -> None:
    assert strided_timesteps(20, 5) == [0, 5, 10, 14, 19]
    assert strided_timesteps(10, 3) == [0, 4, 9]
    assert strided_timesteps(10, 2) == [0, 9]
    assert strided_timesteps(10, 1) == [9]
    assert strided_timesteps(7, 7) == list(range(7))
    with pytest.raises(ValueError, match="at most T"):
        strided_timesteps(5, 6)


@pytest.mark.parametrize("beta_schedule", ["cosine", "linear", "vp"])
def test_strided_schedule_has_the_trained_alpha_bar_at_its_steps(beta_schedule: str) -> None:
    trained = DiffusionSchedule(20, beta_schedule)
    strided = trained.strided(6)
    assert strided.n_steps == 6 and strided.trained_steps == 20 and strided.is_strided
    assert strided.network_steps().tolist() == strided_timesteps(20, 6)
    np.testing.assert_allclose(strided.alphas_cumprod, trained.alphas_cumprod[strided.timesteps], rtol=1e-6)
    assert strided.posterior_std[0] == trained.posterior_std[0] < 1e-9  # variance 0 at the last step (the log floor)
    assert trained.strided(20) is trained
    with pytest.raises(ValueError, match="strided again"):
        strided.strided(3)


def test_strided_chain_is_ddim_with_eta_1_on_the_trained_schedule() -> None:
    """Hand-written DDIM (eta = 1): x0 from eps at tau_i, x' = sqrt(abar') x0 + sqrt(1 - abar' - s^2) eps_hat + s z."""
    th.manual_seed(0)
    net = NoisePredictionNet(2, 3, [16, 16], th.nn.Mish, 8)
    trained = DiffusionSchedule(12, "cosine")
    strided = trained.strided(4)
    features = th.randn(5, 3)
    generator = th.Generator().manual_seed(3)
    with th.no_grad():
        actions = sample_actions(net, strided, features, generator)

    generator = th.Generator().manual_seed(3)
    draws = [th.randn(5, 2, generator=generator) for _ in range(4)]
    abar = trained.alphas_cumprod.double()
    taus = strided.timesteps
    x = draws[0].double()
    with th.no_grad():
        for index, tau in enumerate(reversed(taus)):
            prev = taus[len(taus) - 2 - index] if index < len(taus) - 1 else None
            abar_t = abar[tau]
            abar_prev = abar[prev] if prev is not None else th.tensor(1.0, dtype=th.float64)
            eps = net(x.float(), net.embed_time(th.tensor([tau])), features).double()
            x0 = ((x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()).clamp(-1, 1)
            eps_hat = (x - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
            sigma = ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
            x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp_min(0).sqrt() * eps_hat
            if prev is not None:
                x = x + sigma * draws[index + 1].double()
    np.testing.assert_allclose(actions, x.clamp(-1, 1).float(), atol=1e-5)


def test_fast_sampler_gives_the_reference_strided_chain() -> None:
    th.manual_seed(0)
    net = NoisePredictionNet(3, 4, [16, 16], th.nn.Mish, 8)
    strided = DiffusionSchedule(10, "vp").strided(3)
    features = th.randn(6, 4)
    with th.no_grad():
        reference = sample_actions(net, strided, features, th.Generator().manual_seed(1), n_per_state=4)
        fast = sample_actions_fast(net, strided, features, th.Generator().manual_seed(1), n_per_state=4)
    np.testing.assert_allclose(fast, reference, atol=1e-5)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_s_equal_t_is_todays_chain_and_fewer_steps_act_in_bounds(name: str) -> None:
    model = make(name, AsymmetricBoxEnv())
    obs = seeded_observations(model.observation_space, 3)
    n_steps = model.policy.n_diffusion_steps
    default = model.predict(obs, deterministic=True)[0]
    th.manual_seed(4)
    default_behaviour = model.predict(obs)[0]
    model.policy.n_acting_steps = n_steps
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], default)
    th.manual_seed(4)
    np.testing.assert_array_equal(model.predict(obs)[0], default_behaviour)
    for count in (1, 2):
        model.policy.n_acting_steps = count
        actions = model.predict(obs, deterministic=True)[0]
        assert actions.shape == default.shape
        assert np.all(actions >= model.action_space.low) and np.all(actions <= model.action_space.high)


def test_training_keeps_t_steps_and_saved_models_keep_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make("QVPO", n_acting_steps=2)
    model.learning_starts = 20
    steps_asked = []
    original = DiffusionActor.sample

    def spy(actor: DiffusionActor, *args: Any, **kwargs: Any) -> th.Tensor:
        steps_asked.append(kwargs.get("n_steps"))
        return original(actor, *args, **kwargs)

    monkeypatch.setattr(DiffusionActor, "sample", spy)
    model.learn(40)  # collection acts with S steps, the updates' targets and candidates sample T
    assert set(steps_asked) == {2, None}
    monkeypatch.undo()
    model.save(tmp_path / "model.zip")
    loaded = QVPO.load(tmp_path / "model.zip")
    assert loaded.policy.n_acting_steps == 2
    obs = seeded_observations(loaded.observation_space, 1)[0]
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_files_saved_before_the_option_act_with_t_steps() -> None:
    old = QVPO.load(Path(__file__).parent / "data" / "qvpo_v1_pendulum.zip")
    assert old.policy.n_acting_steps is None


@pytest.mark.parametrize("value", [0, 6, 2.5, True, "3"])
def test_bad_step_counts_are_refused_with_their_name(value: object) -> None:
    model = make("QVPO", n_diffusion_steps=5)
    with pytest.raises(ValueError, match=r"n_acting_steps must be an integer in \[1, T=5\]"):
        model.policy.n_acting_steps = value
    with pytest.raises(ValueError, match="n_acting_steps"):
        make("QVPO", n_diffusion_steps=5, n_acting_steps=value)


def test_compiled_acting_gives_the_eager_strided_actions() -> None:
    eager = make("QVPO", n_acting_steps=2, compile_acting_after=None)
    compiled = make("QVPO", n_acting_steps=2, compile_acting_after=0, compile_in_background=False)
    compiled.policy.load_state_dict(eager.policy.state_dict())
    obs = seeded_observations(eager.observation_space, 2)
    for deterministic in (True, False):
        th.manual_seed(5)
        expected = eager.predict(obs, deterministic=deterministic)[0]
        th.manual_seed(5)
        actions = compiled.predict(obs, deterministic=deterministic)[0]
        np.testing.assert_allclose(actions, expected, atol=1e-5)
    assert compiled.policy.compiled_acting.compiled_keys


@pytest.mark.parametrize("name", ["QVPO", "DiffusionQL"])
def test_onnx_export_honours_the_step_count(tmp_path: Path, name: str) -> None:
    pytest.importorskip("onnxruntime")
    from sb3_qvpo.export import OnnxPolicy, acting_noise, draw_acting_noise, export_onnx

    model = make(name, AsymmetricBoxEnv())
    model.policy.n_acting_steps = 2
    assert acting_noise(model.policy, 3, deterministic=False).shapes["chain_noise"][0] == 2
    obs = seeded_observations(model.observation_space, 3)
    export_onnx(model, tmp_path / "det.onnx", deterministic=True, batch_size=3)
    np.testing.assert_allclose(
        OnnxPolicy(tmp_path / "det.onnx").predict(obs), model.predict(obs, deterministic=True)[0], atol=1e-5
    )
    export_onnx(model, tmp_path / "stoch.onnx", deterministic=False, batch_size=3)
    th.manual_seed(2)
    noise = draw_acting_noise(model.policy, 3)
    th.manual_seed(2)
    expected = model.predict(obs)[0]
    np.testing.assert_allclose(OnnxPolicy(tmp_path / "stoch.onnx").predict(obs, noise), expected, atol=1e-5)
