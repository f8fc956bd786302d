"""The scripts behind the committed evidence: the learning benchmark and the bandit picture."""

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch as th
import yaml

from sb3_qvpo import DIPO, QVPO
from sb3_qvpo.envs import PAPER_PEAK_CENTERS, MultiPeakBanditEnv

ROOT = Path(__file__).resolve().parent.parent


def load_script(relative_path: str) -> ModuleType:
    path = ROOT / relative_path
    if str(path.parent) not in sys.path:  # the scripts import their sibling modules, as when run as scripts
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def learning() -> ModuleType:
    return load_script("benchmarks/learning.py")


@pytest.fixture
def cpu_scale(learning: ModuleType, tmp_path: Path) -> object:
    """The CPU comparison writing into a temporary folder."""
    return dataclasses.replace(learning.SCALES["cpu"], results_dir=tmp_path)


@pytest.fixture
def paper_scale(learning: ModuleType, tmp_path: Path) -> object:
    return dataclasses.replace(learning.SCALES["paper"], results_dir=tmp_path)


@pytest.fixture
def bandit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = load_script("examples/bandit_multimodality.py")
    monkeypatch.setattr(module, "RESULTS_DIR", tmp_path)
    return module


@pytest.mark.parametrize("algo", ["sac", "td3"])
@pytest.mark.parametrize("scale_name", ["cpu", "paper"])
def test_baselines_take_rl_zoo_tuned_entries(learning: ModuleType, tmp_path: Path, algo: str, scale_name: str) -> None:
    import rl_zoo3

    scale = dataclasses.replace(learning.SCALES[scale_name], results_dir=tmp_path)
    with open(Path(rl_zoo3.__file__).parent / "hyperparams" / f"{algo}.yml") as file:
        zoo = yaml.safe_load(file)
    conf = yaml.safe_load(learning.write_zoo_conf(algo, scale).read_text())
    assert set(conf) == set(scale.budgets)
    for task, entry in scale.zoo_entries.items():
        assert conf[task] == zoo[entry]


@pytest.mark.parametrize("algo", ["qvpo", "qsm", "dipo"])
def test_paper_scale_runs_the_shipped_settings_on_the_paper_tasks(
    learning: ModuleType, paper_scale: object, monkeypatch: pytest.MonkeyPatch, algo: str
) -> None:
    conf_path = learning.write_our_conf(algo, paper_scale)
    shipped = yaml.safe_load((ROOT / "hyperparams" / f"{algo}.yml").read_text())
    conf = yaml.safe_load(conf_path.read_text())
    assert set(conf) == {"Hopper-v5", "Walker2d-v5", "Ant-v5", "HalfCheetah-v5", "Humanoid-v5"}
    assert all(conf[task] == shipped[task] for task in conf)  # no CPU override at the paper's scale
    commands = []

    def refuse(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        commands.append(command)
        return subprocess.CompletedProcess(command, 1, "", "not run in a test")

    monkeypatch.setattr(learning.subprocess, "run", refuse)
    message = learning.train(
        learning.Run("Ant-v5", algo, 4, paper_scale.results_dir), paper_scale, conf_path, Path("logs"), "cuda"
    )
    assert message.startswith("FAILED")
    (command,) = commands
    flags = dict(zip(command[3::2], command[4::2], strict=True))  # after: python -m sb3_qvpo.train
    assert flags["--algo"] == algo and flags["--env"] == "Ant-v5" and flags["--seed"] == "4"
    assert (flags["-n"], flags["--eval-freq"], flags["--device"]) == ("1000000", "10000", "cuda")
    assert flags["--conf-file"] == str(conf_path)


def test_qvpo_settings_cover_every_task_and_build(learning: ModuleType, cpu_scale: object) -> None:
    conf = yaml.safe_load(learning.write_our_conf("qvpo", cpu_scale).read_text())
    assert set(conf) == set(cpu_scale.budgets)
    assert conf["Hopper-v5"] == yaml.safe_load(learning.QVPO_CPU_CONF.read_text())["Hopper-v5"]
    assert conf["Pendulum-v1"] == yaml.safe_load((ROOT / "hyperparams" / "qvpo.yml").read_text())["Pendulum-v1"]
    for task, entry in conf.items():
        kwargs = {key: value for key, value in entry.items() if key not in ("n_timesteps", "policy")}
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"])  # the zoo's own convention for this field
        model = QVPO(entry["policy"], task, **kwargs)
        assert model.n_action_samples == entry["n_action_samples"]


@pytest.mark.parametrize("variant", ["normal-init", "independent-batch", "release"])
def test_qvpo_variants_are_the_task_entry_plus_their_options(learning: ModuleType, cpu_scale: object, variant: str) -> None:
    conf_path = learning.write_our_conf("qvpo", cpu_scale)
    entry = yaml.safe_load(conf_path.read_text())["Pendulum-v1"]
    run = learning.Run("Pendulum-v1", "qvpo", 0, cpu_scale.results_dir, variant)
    flag, *overrides = learning.variant_params(run, conf_path)
    assert flag == "-params"
    # rl-zoo3's StoreDict evaluates each "key:value" the same way.
    params = {key: eval(value) for key, value in (override.split(":", 1) for override in overrides)}
    _, policy_extra, algo_params = learning.VARIANTS[variant]
    assert params["policy_kwargs"] == {**eval(entry["policy_kwargs"]), **{k: eval(v) for k, v in policy_extra.items()}}
    kwargs = {key: value for key, value in entry.items() if key not in ("n_timesteps", "policy")}
    model = QVPO(entry["policy"], "Pendulum-v1", **{**kwargs, **params})
    assert model.independent_actor_batch == eval(algo_params["independent_actor_batch"])
    assert model.policy.weight_init == eval(policy_extra["weight_init"])
    assert run.evaluations_path.name == f"qvpo-{variant}_seed0.npz"


def test_dipo_accumulate_variant_is_its_old_defaults(learning: ModuleType, cpu_scale: object) -> None:
    conf_path = learning.write_our_conf("dipo", cpu_scale)
    entry = yaml.safe_load(conf_path.read_text())["Pendulum-v1"]
    run = learning.Run("Pendulum-v1", "dipo", 0, cpu_scale.results_dir, "accumulate")
    _, *overrides = learning.variant_params(run, conf_path)
    params = {key: eval(value) for key, value in (override.split(":", 1) for override in overrides)}
    kwargs = {key: value for key, value in entry.items() if key not in ("n_timesteps", "policy")}
    model = DIPO(entry["policy"], "Pendulum-v1", **{**kwargs, **params})
    assert model.accumulate_improved_actions is True and model.policy.weight_init == "truncated_normal"
    assert run.evaluations_path.name == "dipo-accumulate_seed0.npz"
    with pytest.raises(AssertionError):
        learning.variant_params(learning.Run("Pendulum-v1", "qvpo", 0, cpu_scale.results_dir, "accumulate"), conf_path)


def test_report_summarises_final_and_best_over_seeds(learning: ModuleType, cpu_scale: object) -> None:
    task = "Pendulum-v1"
    results_dir = cpu_scale.results_dir
    (results_dir / task).mkdir()
    per_seed_curves = {0: [-1000.0, -300.0, -400.0], 1: [-900.0, -200.0, -100.0]}
    for seed, curve in per_seed_curves.items():
        results = np.repeat(np.array(curve)[:, None], 10, axis=1)  # ten equal episodes per evaluation
        np.savez(results_dir / task / f"qvpo_seed{seed}.npz", timesteps=np.array([1, 2, 3]) * 1000, results=results)
        (results_dir / task / f"qvpo_seed{seed}.json").write_text(json.dumps({"wall_seconds": 10.0 * (seed + 1)}))
    learning.report(cpu_scale)
    table = (results_dir / "README.md").read_text()
    # final: mean(-400, -100) = -250, std 150; best: mean(-300, -100) = -200, std 100; wall mean 15 s.
    # first reached -200: seed 0 never, seed 1 at its second evaluation (2,000 steps).
    assert "| Pendulum-v1 | 20,000 | QVPO | 2 | -250.0 ± 150.0 | -200.0 ± 100.0 | - / 2,000 | 15 |" in table
    assert (results_dir / f"{task}.png").stat().st_size > 0
    assert "SAC" not in table.split("|---|")[-1]  # no runs, no row


def test_bandit_summary_counts_samples_on_each_peak(bandit: ModuleType) -> None:
    env = MultiPeakBanditEnv()
    centres = np.array(PAPER_PEAK_CENTERS)
    actions = np.concatenate([np.repeat(centres[:1], 3, axis=0), centres[2:], np.array([[2.0, -2.0]] * 4)])
    summary = bandit.summarise(env, actions)
    assert summary["share_on_each_peak"] == [0.375, 0.0, 0.125]
    assert summary["mean_reward"] == pytest.approx(env.reward(actions).mean())
    assert summary["spread"] == pytest.approx(actions.std(axis=0).mean())


def test_bandit_snapshots_draw_policy_samples_inside_the_box(bandit: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bandit, "RANDOM_STEPS", 64)
    monkeypatch.setattr(bandit, "SNAPSHOT_UPDATES", (0, 3))
    monkeypatch.setattr(bandit, "N_PLOTTED_SAMPLES", 50)
    snapshots, _ = bandit.train_setting(dict(n_diffusion_steps=3, n_uniform_samples=2), seed=0)
    assert sorted(snapshots) == [0, 3]
    for actions in snapshots.values():
        assert actions.shape == (50, 2)
        assert np.all(np.abs(actions) <= 2.5)
    # The network changed between the two snapshots, and so did the samples drawn with the same seed.
    assert not np.allclose(snapshots[0], snapshots[3])


def test_fewer_steps_script_measures_every_step_count_on_a_saved_model(tmp_path: Path) -> None:
    fewer_steps = load_script("benchmarks/fewer_steps.py")
    assert fewer_steps.step_counts(10) == [10, 5, 3, 2, 1]
    assert fewer_steps.step_counts(20) == [20, 10, 5, 2, 1]
    assert fewer_steps.step_counts(5) == [5, 3, 2, 1]
    assert fewer_steps.step_counts(1) == [1]
    model = QVPO("MlpPolicy", "Pendulum-v1", seed=0, policy_kwargs=dict(net_arch=[16], n_diffusion_steps=4))
    model.save(tmp_path / "model.zip")
    threads = th.get_num_threads()
    try:
        result = fewer_steps.measure("Pendulum-v1", "qvpo", tmp_path / "model.zip", rounds=1, calls=2, episodes=1)
    finally:
        th.set_num_threads(threads)  # the script sets one thread, as it measures with one
    assert list(result["returns"]) == list(result["predict_ms"]) == ["4", "2", "1"]
    assert all(len(returns) == 1 and -2000 < returns[0] <= 0 for returns in result["returns"].values())
    assert result["n_diffusion_steps"] == 4 and result["torch_threads"] == 1
