"""
Where the compiled acting path's time goes, one torch thread, Hopper-v5 sizes, paper networks
(3x256 Mish, T 20): ``predict`` as a whole, the policy's ``act`` (no SB3 around it), the compiled
function alone, and pieces timed on their own: the random draws, the hidden layers' matrix products
(2 per step and 2 per Q network, as the compiled graph calls them), and Mish on the hidden
activations (3 per step and 2 per Q network), compiled as one graph so no call overhead is counted.

    python benchmarks/acting_breakdown.py       # writes benchmarks/results/acting_breakdown_cpu.md
"""

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

from sb3_qvpo import QVPO
from sb3_qvpo.diffusion.fast_ops import mish_formula
from sb3_qvpo.diffusion.fast_sampler import draw_chain_noise

OBS_DIM, ACTION_DIM, WIDTH, N_STEPS, N_CRITICS = 11, 3, 256, 20, 2


class SizedEnv(gym.Env):
    """Only the spaces matter: the networks' sizes."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def best_ms(function: Callable[[], Any], n_calls: int) -> float:
    """The fastest of ``n_calls`` calls after a warm-up (the least disturbed on a shared machine)."""
    for _ in range(20):
        function()
    times = []
    for _ in range(n_calls):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def products(hidden: th.Tensor, weight_t: th.Tensor) -> th.Tensor:
    """The hidden layers' matrix products of one action, chained as in the chain."""
    for _ in range(2 * N_STEPS + 2 * N_CRITICS):
        hidden = th.mm(hidden, weight_t)
    return hidden


def mish_passes(hidden: th.Tensor) -> th.Tensor:
    """Mish as many times as one action applies it to hidden activations, in one compiled graph."""
    for _ in range(3 * N_STEPS + 2 * N_CRITICS):
        hidden = mish_formula(hidden) * 0.5
    return hidden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--output", default="benchmarks/results/acting_breakdown_cpu.md")
    args = parser.parse_args()
    th.set_num_threads(1)
    warnings.simplefilter("ignore")
    model = QVPO("MlpPolicy", SizedEnv(), buffer_size=1, seed=0, policy_kwargs=dict(compile_acting_after=0))
    policy = model.policy
    obs = SizedEnv.observation_space.sample()
    compiled_products = th.compile(products, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})
    compiled_mish = th.compile(mish_passes, fullgraph=True, dynamic=False, options={"cpp_wrapper": True})
    lines = [
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"torch {th.__version__}, one thread, Hopper-v5 sizes, 3x256 Mish, T {N_STEPS}; fastest of {args.calls} calls.",
        "",
        "| rows | predict ms | act ms | compiled function ms | random draws ms | hidden products ms | Mish ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for deterministic, n_rows in ((False, model.n_behavior_samples), (True, model.n_eval_samples)):
        model.predict(obs, deterministic=deterministic)  # compiles this batch size
        tensor_obs = policy.obs_to_tensor(obs)[0]
        samples = n_rows

        def act(samples: int = samples, tensor_obs: th.Tensor = tensor_obs) -> th.Tensor:
            with th.no_grad():
                return policy.act(tensor_obs, samples)

        acting = policy.compiled_acting
        function = acting._functions["cpu"]
        captured: dict[str, tuple] = {}

        def capture(*arguments: Any, function: Callable = function, captured: dict = captured) -> Any:
            captured["arguments"] = arguments
            return function(*arguments)

        acting._functions["cpu"] = capture
        act()
        acting._functions["cpu"] = function
        arguments = captured["arguments"]
        hidden = th.randn(n_rows, WIDTH)
        weight_t = th.randn(WIDTH, WIDTH) / WIDTH**0.5
        compiled_products(hidden, weight_t)
        compiled_mish(hidden)
        with th.no_grad():
            row = [
                best_ms(lambda deterministic=deterministic: model.predict(obs, deterministic=deterministic), args.calls),
                best_ms(act, args.calls),
                best_ms(lambda arguments=arguments, function=function: function(*arguments), args.calls),
                best_ms(
                    lambda n_rows=n_rows: draw_chain_noise((n_rows, ACTION_DIM), N_STEPS, None, th.device("cpu"), th.float32),
                    args.calls,
                ),
                best_ms(lambda hidden=hidden, weight_t=weight_t: compiled_products(hidden, weight_t), args.calls),
                best_ms(lambda hidden=hidden: compiled_mish(hidden), args.calls),
            ]
        lines.append(f"| {n_rows} | " + " | ".join(f"{value:.3f}" for value in row) + " |")
    lines += [
        "",
        "predict = SB3's `model.predict` on one observation; act = `policy.act` on a tensor (features, "
        "random draws, the compiled function, the choice); hidden products = 2 per step and 2 per Q network "
        "(rows x 256 by 256 x 256, chained in one compiled graph); Mish = 3 per step and 2 per Q network on "
        "rows x 256 values (with a multiply by 0.5 to keep values in range), one compiled graph.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    with open(args.output, "w") as file:
        file.write(table)


if __name__ == "__main__":
    main()
