"""
How long the call that compiles the acting path waits when it compiles in the calling thread
(``compile_in_background=False``; the default before 0.3), in a first process with an empty
inductor cache and in a second process that finds the first one's cache on disk. Hopper-v5 sizes,
the paper's QVPO policy (3x256 Mish, T 20), best of 32 (``predict(deterministic=True)``),
``compile_acting_after=0``, one torch thread.

    python benchmarks/compile_stall.py     # writes benchmarks/results/compile_stall_cpu.md
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from fresh_process import run_fresh

RESULTS = Path(__file__).resolve().parent / "results" / "compile_stall_cpu.md"
CALLS_AFTER = 100


def measure() -> dict:
    """In a child process: seconds of the compiling call, then ms per compiled call."""
    import torch as th
    from speed import SizedEnv

    from sb3_qvpo import QVPO

    th.set_num_threads(1)
    env = SizedEnv(11, 3)
    policy_kwargs = dict(compile_acting_after=0, compile_in_background=False)
    model = QVPO("MlpPolicy", env, seed=0, device="cpu", buffer_size=100, policy_kwargs=policy_kwargs)
    observation = env.observation_space.sample()[None]
    start = time.perf_counter()
    model.predict(observation, deterministic=True)
    compiling_call = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(CALLS_AFTER):
        model.predict(observation, deterministic=True)
    per_call_ms = 1e3 * (time.perf_counter() - start) / CALLS_AFTER
    return {
        "compiling_call_s": compiling_call,
        "compiled_ms_per_call": per_call_ms,
        "compiled": bool(model.policy.compiled_acting.compiled_keys),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure()))
        return
    with tempfile.TemporaryDirectory() as cache:
        runs = {
            name: run_fresh(__file__, [], cache)
            for name in ("first process (empty cache)", "second process (the first one's cache)")
        }
    lines = [
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        "The call that compiles the acting path in the calling thread, Hopper-v5 sizes, the paper's",
        f"QVPO policy, best of 32, one torch thread; then the mean of {CALLS_AFTER} compiled calls.",
        "",
        "| process | compiling call (s) | compiled call (ms) |",
        "|---|---|---|",
    ]
    for name, run in runs.items():
        assert run["compiled"], f"{name}: the acting path did not compile"
        lines.append(f"| {name} | {run['compiling_call_s']:.2f} | {run['compiled_ms_per_call']:.2f} |")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
