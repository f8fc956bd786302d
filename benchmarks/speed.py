"""
Milliseconds per QVPO update and per action at the paper's settings: plain path, fast path, and
(acting) the compiled acting path and the ONNX export run by onnxruntime; the update at the small
CPU settings; CGPO at its paper's settings (Tables 4-5) and SAC beside them.

Settings: batch 256, N_d 64, N_e 10, T 20, K_b 4, K_t 1, 3x256 Mish, for Hopper-v5 sizes
(obs 11, action 3) and Humanoid-v5 sizes (obs 348, action 17). SB3's SAC (default 2x256 ReLU,
batch 256) is timed in the same run as the yardstick. The "matmul floor" is the time spent in
matrix-product kernels (aten::mm/addmm/bmm/...) during the fast-path updates, read from
torch.profiler in the same run: what the update would cost if everything else were free.

    python benchmarks/speed.py --threads 1                  # CPU, writes benchmarks/results/speed_cpu.md
    python benchmarks/speed.py --device cuda --updates 50   # GPU
"""

import argparse
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure

from sb3_qvpo import CGPO, QVPO

SIZES = {"Hopper-v5": (11, 3), "Humanoid-v5": (348, 17)}
PAPER_SETTINGS: dict[str, Any] = dict(
    batch_size=256,
    n_action_samples=64,
    n_uniform_samples=10,
    n_behavior_samples=4,
    n_target_samples=1,
    learning_starts=0,
    buffer_size=10_000,
)
SMALL_SETTINGS: dict[str, Any] = dict(batch_size=128, n_action_samples=16, n_uniform_samples=4, n_eval_samples=16)
ACTING_ROWS = {"action": 4, "eval": 32}  # K_b and n_eval_samples candidates for one observation
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
FILL_TRANSITIONS = 2_000


class SizedEnv(gym.Env):
    """A stand-in with a task's observation and action sizes: update cost depends on nothing else."""

    def __init__(self, obs_dim: int, action_dim: int):
        super().__init__()
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def fill_buffer(model: BaseAlgorithm, obs_dim: int, action_dim: int) -> None:
    rng = np.random.default_rng(0)
    buffer = model.replay_buffer
    assert buffer is not None
    for _ in range(FILL_TRANSITIONS):
        obs = rng.standard_normal((1, obs_dim)).astype(np.float32)
        next_obs = rng.standard_normal((1, obs_dim)).astype(np.float32)
        action = rng.uniform(-1, 1, (1, action_dim)).astype(np.float32)
        buffer.add(obs, next_obs, action, rng.standard_normal(1).astype(np.float32), np.zeros(1), [{}])
    model.set_logger(configure(None, [""]))
    model._current_progress_remaining = 1.0


def synchronize(device: th.device) -> None:
    if device.type == "cuda":
        th.cuda.synchronize()


def time_per_call(function: Callable[[], Any], n_calls: int, device: th.device, warmup: int = 2) -> float:
    for _ in range(warmup):
        function()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n_calls):
        function()
    synchronize(device)
    return (time.perf_counter() - start) / n_calls * 1000.0


def matmul_ms_per_update(model: BaseAlgorithm, n_updates: int, device: th.device) -> float:
    activities = [th.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(th.profiler.ProfilerActivity.CUDA)
    with th.profiler.profile(activities=activities) as profiler:
        model.train(gradient_steps=n_updates, batch_size=256)
        synchronize(device)
    total_us = 0.0
    for event in profiler.key_averages():
        if event.key in MATMUL_OPS:
            # Self time, so aten::linear -> aten::addmm is not counted twice.
            total_us += event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
    return total_us / 1000.0 / n_updates


def acting_matmul_floor_ms(model: QVPO, n_rows: int, n_calls: int, device: th.device) -> float:
    """
    The matrix products of one ``predict`` with ``n_rows`` candidates, and nothing else: every
    Linear of the noise network at every one of the T steps (the first on the action columns
    only, as the fast path computes it), then every Linear of the twin critic once, on inputs of
    the right shapes. What acting would cost if every other operation were free.
    """
    actor, critic = model.policy.actor, model.policy.critic
    steps = actor.schedule.n_steps
    chain = [layer for layer in actor.noise_net.body if isinstance(layer, th.nn.Linear)]
    scoring = [layer for q_net in critic.q_networks for layer in q_net if isinstance(layer, th.nn.Linear)]
    action_dim = actor.action_dim
    shapes = [(chain[0].weight[:, :action_dim].t().contiguous(), chain[0].bias)]
    shapes += [(layer.weight.t().contiguous(), layer.bias) for layer in chain[1:]]
    inputs = [th.randn(n_rows, weight.shape[0], device=device) for weight, _ in shapes]
    score_inputs = [th.randn(n_rows, layer.in_features, device=device) for layer in scoring]

    @th.no_grad()
    def products() -> None:
        for _ in range(steps):
            for x, (weight, bias) in zip(inputs, shapes, strict=True):
                th.addmm(bias, x, weight)
        for x, layer in zip(score_inputs, scoring, strict=True):
            th.nn.functional.linear(x, layer.weight, layer.bias)

    return time_per_call(products, n_calls, device)


def make_qvpo(env: gym.Env, device: str, fast_path: bool, seed: int, compile_acting_after: int | None = None) -> QVPO:
    """Paper settings; ``compile_acting_after``: None acts eagerly, 0 compiles acting at the first call."""
    policy_kwargs = dict(
        net_arch=[256, 256, 256], n_diffusion_steps=20, fast_path=fast_path, compile_acting_after=compile_acting_after
    )
    return QVPO("MlpPolicy", env, device=device, seed=seed, policy_kwargs=policy_kwargs, **PAPER_SETTINGS)


def make_small_qvpo(env: gym.Env, device: str, seed: int) -> QVPO:
    """The small CPU settings of hyperparams/qvpo.yml (Pendulum, InvertedDoublePendulum) and the learning benchmark."""
    return QVPO(
        "MlpPolicy",
        env,
        device=device,
        seed=seed,
        policy_kwargs=dict(net_arch=[64, 64], n_diffusion_steps=10),
        **dict(PAPER_SETTINGS, **SMALL_SETTINGS),
    )


def make_cgpo(env: gym.Env, device: str, seed: int) -> CGPO:
    """CGPO's defaults (its paper's Tables 4-5: 2x256 Mish, T 20, G 10, K_t 4, N_e 10, batch 256)."""
    return CGPO("MlpPolicy", env, device=device, seed=seed, learning_starts=0, buffer_size=10_000)


def onnx_acting_ms(model: QVPO, single_obs: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    """
    The same policy exported to ONNX (sb3_qvpo.export_onnx) and run by onnxruntime's CPU provider
    with as many threads as torch: K_b = 4 with its noise drawn by numpy at each call (as a runtime
    without torch would), and best of 32 with its fixed noise baked in.
    """
    import tempfile

    from sb3_qvpo import export_onnx
    from sb3_qvpo.export import OnnxPolicy, acting_noise

    with tempfile.TemporaryDirectory() as folder:
        export_onnx(model, f"{folder}/stochastic.onnx", deterministic=False)
        export_onnx(model, f"{folder}/deterministic.onnx", deterministic=True)
        stochastic = OnnxPolicy(f"{folder}/stochastic.onnx", threads=args.threads)
        deterministic = OnnxPolicy(f"{folder}/deterministic.onnx", threads=args.threads)
    shapes = acting_noise(model.policy, 1, deterministic=False).shapes
    rng = np.random.default_rng(args.seed)
    obs = single_obs.astype(np.float32)

    def act() -> np.ndarray:
        noise = {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}
        return stochastic.predict(obs, noise)

    cpu = th.device("cpu")
    return {
        "onnx_action_ms": time_per_call(act, args.actions, cpu),
        "onnx_eval_ms": time_per_call(lambda: deterministic.predict(obs), args.actions, cpu),
    }


def benchmark_task(name: str, args: argparse.Namespace, device: th.device) -> dict[str, float]:
    obs_dim, action_dim = SIZES[name]
    env = SizedEnv(obs_dim, action_dim)
    single_obs = env.observation_space.sample()[None]
    row: dict[str, float] = {}
    for label, fast_path in (("plain", False), ("fast", True)):
        model = make_qvpo(env, args.device, fast_path, args.seed)  # eager acting
        fill_buffer(model, obs_dim, action_dim)
        row[f"{label}_update_ms"] = time_per_call(lambda m=model: m.train(1, 256), args.updates, device, warmup=1)
        row[f"{label}_action_ms"] = time_per_call(
            lambda m=model: m.predict(single_obs, deterministic=False), args.actions, device
        )
        row[f"{label}_eval_ms"] = time_per_call(
            lambda m=model: m.predict(single_obs, deterministic=True), args.actions, device
        )
        if fast_path:
            row["matmul_floor_ms"] = matmul_ms_per_update(model, args.updates, device)
            for kind, n_rows in ACTING_ROWS.items():
                row[f"{kind}_matmul_floor_ms"] = acting_matmul_floor_ms(model, n_rows, args.actions, device)
    compiled = make_qvpo(env, args.device, True, args.seed, compile_acting_after=0)
    for deterministic in (False, True):  # compile both batch sizes before timing
        compiled.predict(single_obs, deterministic=deterministic)
    row["compiled_action_ms"] = time_per_call(lambda: compiled.predict(single_obs, deterministic=False), args.actions, device)
    row["compiled_eval_ms"] = time_per_call(lambda: compiled.predict(single_obs, deterministic=True), args.actions, device)
    row.update(onnx_acting_ms(compiled, single_obs, args))
    small = make_small_qvpo(env, args.device, args.seed)
    fill_buffer(small, obs_dim, action_dim)
    row["small_update_ms"] = time_per_call(lambda: small.train(1, 128), max(args.updates, 20), device, warmup=1)
    cgpo = make_cgpo(env, args.device, args.seed)
    fill_buffer(cgpo, obs_dim, action_dim)
    row["cgpo_update_ms"] = time_per_call(lambda: cgpo.train(1, 256), args.updates, device, warmup=1)
    row["cgpo_action_ms"] = time_per_call(lambda: cgpo.predict(single_obs, deterministic=False), args.actions, device)
    row["cgpo_eval_ms"] = time_per_call(lambda: cgpo.predict(single_obs, deterministic=True), args.actions, device)
    sac = SAC("MlpPolicy", env, device=args.device, seed=args.seed, batch_size=256, learning_starts=0, buffer_size=10_000)
    fill_buffer(sac, obs_dim, action_dim)
    row["sac_update_ms"] = time_per_call(lambda: sac.train(1, 256), max(args.updates, 20), device)
    row["sac_action_ms"] = time_per_call(lambda: sac.predict(single_obs, deterministic=False), args.actions, device)
    row["sac_eval_ms"] = time_per_call(lambda: sac.predict(single_obs, deterministic=True), args.actions, device)
    return row


def render(rows: dict[str, dict[str, float]], args: argparse.Namespace, device: th.device) -> str:
    device_name = th.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    lines = [
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"torch {th.__version__}, device {device.type} ({device_name}), torch threads {th.get_num_threads()}, "
        f"{args.updates} timed updates and {args.actions} timed single-observation actions per row.",
        "Paper settings: batch 256, N_d 64, N_e 10, T 20, K_b 4, K_t 1, 3x256 Mish.",
        "",
        "| task sizes | plain ms/update | fast ms/update | speed-up | matmul floor ms | fast / floor "
        "| small settings ms/update | SAC ms/update | small / SAC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['plain_update_ms']:.1f} | {row['fast_update_ms']:.1f} | "
            f"{row['plain_update_ms'] / row['fast_update_ms']:.2f}x | {row['matmul_floor_ms']:.1f} | "
            f"{row['fast_update_ms'] / row['matmul_floor_ms']:.2f} | {row['small_update_ms']:.2f} | "
            f"{row['sac_update_ms']:.2f} | {row['small_update_ms'] / row['sac_update_ms']:.2f} |"
        )
    lines += [
        "",
        "Small settings: 2x64 Mish, T 10, batch 128, N_d 16, N_e 4 (the CPU entries of hyperparams/qvpo.yml).",
        "",
        "Acting through SB3's public `predict` on one observation (ms per call): K_b = 4 candidates "
        "(`deterministic=False`) and 32 (`deterministic=True`, what EvalCallback uses), with the plain "
        "reference modules, the eager fast path, and the compiled acting path (`compile_acting_after=0`, "
        "compiled before timing), the same policy exported to ONNX and run by onnxruntime (CPU provider, as many "
        "threads as torch; K_b = 4 drawing its noise with numpy at each call, best of 32 with its fixed noise baked "
        "in); matmul floor = the chain's and the critic's matrix products alone at "
        "those row counts (T x every Linear of the noise network + the twin critic's), timed in the same run.",
        "",
        "| task sizes | plain K_b=4 | fast K_b=4 | compiled K_b=4 | onnxruntime K_b=4 | matmul floor 4 rows "
        "| plain best of 32 | fast best of 32 | compiled best of 32 | onnxruntime best of 32 | matmul floor 32 rows "
        "| SAC predict | SAC predict deterministic |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['plain_action_ms']:.2f} | {row['fast_action_ms']:.2f} | {row['compiled_action_ms']:.2f} "
            f"| {row['onnx_action_ms']:.2f} | {row['action_matmul_floor_ms']:.2f} | {row['plain_eval_ms']:.2f} "
            f"| {row['fast_eval_ms']:.2f} | {row['compiled_eval_ms']:.2f} | {row['onnx_eval_ms']:.2f} "
            f"| {row['eval_matmul_floor_ms']:.2f} "
            f"| {row['sac_action_ms']:.3f} | {row['sac_eval_ms']:.3f} |"
        )
    lines += [
        "",
        "CGPO at its paper's settings (Tables 4-5: 2x256 Mish, T 20, G 10 guided steps, K_t 4, N_e 10, batch 256,",
        "2 TQC critics of 25 quantiles), in the same run: one guided chain per state replaces QVPO's N_d = 64",
        "candidates; acting is eager (best by Qhat of 4 / 32 unguided samples).",
        "",
        "| task sizes | CGPO ms/update | QVPO fast ms/update | CGPO / QVPO | SAC ms/update | CGPO / SAC "
        "| CGPO K_b=4 | CGPO best of 32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['cgpo_update_ms']:.1f} | {row['fast_update_ms']:.1f} "
            f"| {row['cgpo_update_ms'] / row['fast_update_ms']:.2f} | {row['sac_update_ms']:.2f} "
            f"| {row['cgpo_update_ms'] / row['sac_update_ms']:.1f} | {row['cgpo_action_ms']:.2f} | {row['cgpo_eval_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--actions", type=int, default=50)
    parser.add_argument("--tasks", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="default: benchmarks/results/speed_<device>.md")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    device = th.device(args.device)
    rows = {name: benchmark_task(name, args, device) for name in args.tasks}
    table = render(rows, args, device)
    print(table)
    output = args.output or f"benchmarks/results/speed_{device.type}.md"
    with open(output, "w") as file:
        file.write(table)


if __name__ == "__main__":
    main()
