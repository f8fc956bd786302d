"""
A measurement in a fresh Python process: the benchmarks that time compiling (``compile_stall.py``,
``first_calls.py``) run each configuration in a process of its own, with the compile caches in a
folder they choose (empty for a first run, kept for a second one) and one OpenMP thread, and read
back the JSON line it prints last.
"""

import json
import os
import subprocess
import sys
from pathlib import Path


def run_fresh(script: str | Path, arguments: list[str], cache_dir: str) -> dict:
    """``python SCRIPT --child ARGUMENTS...`` with inductor's cache (and so the acting packages) in ``cache_dir``."""
    environment = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir, "OMP_NUM_THREADS": "1"}
    environment.pop("SB3_QVPO_ACTING_CACHE", None)  # acting packages go to the inductor cache folder
    script = Path(script).resolve()
    command = [sys.executable, str(script), "--child", *arguments]
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=script.parent)
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-3000:])
    return json.loads(completed.stdout.strip().splitlines()[-1])
