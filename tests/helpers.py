"""Test helpers shared across test modules.

Fixtures every test may use live in the conftest.py files; the ones here are opted into by a
folder's conftest (``from tests.helpers import one_torch_thread``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from mixlab.config import RunConfig
from mixlab.train.callbacks import Callback, read_metrics
from mixlab.train.loop import train
from tests.conftest import tiny_run_config


class KillAt(Callback):
    """Interrupts training like Ctrl-C once the train record of ``step`` is logged."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        if record.get("step") == self.step and "train/loss" in record:
            raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread per test: tiny models gain nothing from a second thread, and on a busy
    2-core machine OpenMP's spinning threads make each step many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_tiny_run(
    store: Path,
    out: Path,
    *,
    mixing: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    **train_options: Any,
) -> Path:
    """Train :func:`tests.conftest.tiny_run_config` into ``out``; returns ``out``.

    ``mixing`` / ``model`` replace those sections, ``train_options`` override ``train.*``.
    """
    raw = tiny_run_config(store, **train_options)
    if mixing is not None:
        raw["mixing"] = mixing
    if model is not None:
        raw["model"] = model
    cfg = RunConfig.from_dict(raw)
    cfg.validate()
    train(cfg, out)
    return out


def train_losses(run_dir: Path) -> dict[int, float]:
    """``step -> train/loss`` of a run folder's metrics.jsonl."""
    return {r["step"]: r["train/loss"] for r in read_metrics(run_dir) if "train/loss" in r}


def strict_loads(text: str) -> Any:
    """json.loads that rejects NaN/Infinity like every strict JSON parser does."""

    def reject(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=reject)


def build(name: str, ctx: Any, **options: Any) -> Any:
    """``build_policy`` from a ``mixing:`` mapping (``name`` plus that policy's options)."""
    from mixlab.mixing.base import build_policy, parse_mixing

    return build_policy(ctx, parse_mixing({"name": name, **options}))


ROOT = Path(__file__).resolve().parents[1]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 300) -> str:
    """``python -m torch.distributed.run --standalone`` on ``args`` with one thread per rank and
    this checkout's ``src`` first on the path; asserts exit 0 and returns stdout + stderr."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT),
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd.append(f"--nproc-per-node={nproc}")
    done = subprocess.run(cmd + args, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout + done.stderr


def load_module(path: Path, name: str) -> ModuleType:
    """Import a file that is not in a package (a script of ``scripts/``) as module ``name``,
    registered in ``sys.modules`` (dataclasses look their module up by name)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
