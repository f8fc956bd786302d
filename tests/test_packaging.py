"""
The distribution: ``python -m build`` makes an sdist and a wheel that ``twine check`` passes, and the
wheel, installed into a fresh virtual environment, trains and loads from outside the checkout with
the hyper-parameter files it ships.
"""

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

import sb3_qvpo

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("build")
pytest.importorskip("twine")


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    assert completed.returncode == 0, f"{' '.join(command)} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    return completed.stdout


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_trains_from_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # --no-isolation: setuptools and wheel come from this environment (no download).
    run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(dist)], cwd=ROOT)
    (wheel,) = dist.glob("sb3_qvpo-*.whl")
    (sdist,) = dist.glob("sb3_qvpo-*.tar.gz")
    assert wheel.name.startswith(f"sb3_qvpo-{sb3_qvpo.__version__}-")
    assert "Checking" in run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], cwd=tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for algo in ("qvpo", "qsm", "dipo", "diffusion_ql", "cgpo"):
        assert f"sb3_qvpo/zoo/hyperparams/{algo}.yml" in names
    assert not any(name.startswith(("tests/", "benchmarks/", "docs/")) for name in names)

    # A fresh venv; its dependencies are this environment's (on its path, after the venv's own
    # site-packages), the package itself only the wheel (this environment's editable install of
    # the checkout is not active there).
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    site_packages = Path(
        run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).strip()
    )
    (site_packages / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site_packages), str(wheel)], cwd=tmp_path)

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "1"
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    where = run([str(python), "-c", "import sb3_qvpo; print(sb3_qvpo.__file__)"], cwd=workdir, env=env)
    assert where.startswith(str(site_packages)), where
    run(
        [
            str(python), "-m", "sb3_qvpo.train", "--algo", "qvpo", "--env", "Pendulum-v1", "-n", "300",
            "--device", "cpu", "--num-threads", "1", "-f", "logs", "--seed", "0",
            "-params", "learning_starts:200", "batch_size:32",
        ],
        cwd=workdir,
        env=env,
    )  # fmt: skip
    (saved,) = (workdir / "logs" / "qvpo").glob("Pendulum-v1_*/Pendulum-v1.zip")
    loaded = run(
        [str(python), "-c", f"from sb3_qvpo import QVPO; m = QVPO.load({str(saved)!r}); print(m.num_timesteps, m._n_updates)"],
        cwd=workdir,
        env=env,
    )
    assert loaded.split() == ["300", "100"]
