"""Run the torchtitan adapter tests in a venv that has torchtitan 0.3.0 (made if missing).

    python tests/integrations/verify_torchtitan.py [--venv /path/to/venv] [-- pytest args]

Not a pytest module. torchtitan cannot go into mixlab's main environment: a plain
``pip install torchtitan==0.3.0`` downgrades datasets (<4.8) and huggingface_hub (1.x), which
breaks transformers 5 that mixlab's models and reference scorer import. The venv made here
(``--system-site-packages``, so it shares torch, transformers and mixlab's other packages)
installs torchtitan and the packages it imports with ``--no-deps`` under a constraints file
that pins torch, so nothing of the main environment changes. The tests then run with
``MIXLAB_REQUIRE_TORCHTITAN=1`` (fail, not skip, if torchtitan does not import) and include the
``slow`` torchrun tests (2 gloo ranks, about a minute on CPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
# torchtitan 0.3.0 and what it imports on the adapter's path (triton is imported, not declared)
PACKAGES = [
    "torchtitan==0.3.0",
    "triton==3.9.0",
    "spmd_types==0.2.3",
    "torch_checkpointing==0.1.1",
    "torchdata==0.11.0",
    "tyro==1.0.17",
    "einops==0.8.2",
    "typeguard==4.6.1",
    "docstring_parser==0.18.0",
]
WITH_DEPS = ["tensorboard"]  # torchtitan's metric logger; installs without touching torch


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import torchtitan, triton, tensorboard"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    if not python.exists():
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True
        )
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write(f"torch=={torch.__version__.split('+')[0]}\n")
        constraints = fh.name
    pip = [str(python), "-m", "pip", "install", "-q", "-c", constraints]
    subprocess.run([*pip, "--no-deps", *PACKAGES], check=True)
    subprocess.run([*pip, *WITH_DEPS], check=True)
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-torchtitan")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    python = ensure_venv(args.venv)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MIXLAB_REQUIRE_TORCHTITAN": "1",
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT),
    }
    test = ROOT / "tests" / "integrations" / "test_torchtitan.py"
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow"]
    return subprocess.run([*cmd, str(test), *args.pytest_args], env=env, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
