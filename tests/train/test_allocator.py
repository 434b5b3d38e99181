"""train.allocator: glibc's mmap/trim thresholds, checked by the page faults they save."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixlab.config import RunConfig
from mixlab.train import allocator
from tests.conftest import tiny_run_config


def _thp_always() -> bool:
    """Transparent huge pages for every mapping: 2 MiB per fault, so fault counts shrink 512x."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return "[always]" in text


glibc = pytest.mark.skipif(
    allocator._glibc() is None or _thp_always(),
    reason="counts 4 KiB page faults: needs Linux with glibc, transparent huge pages not 'always'",
)

# A training-like loop whose activations (41 MB) are above glibc's largest self-adjusted mmap
# threshold (32 MiB): untuned, every step maps and faults them in afresh.
_PROBE = """
import json, resource, sys
import torch
from mixlab.train.allocator import tune_cpu_allocator
tuned = tune_cpu_allocator() if sys.argv[1] == "tuned" else False
torch.manual_seed(0)
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Linear(256, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 256))
x = torch.randn(5000, 256)
def step():
    net(x).square().mean().backward()
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"tuned": tuned, "faults_per_step": (after - before) / 4}))
"""


def _probe(variant: str, env: dict[str, str] | None = None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, variant],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc
def test_tuned_process_reuses_freed_memory() -> None:
    plain = _probe("plain")
    tuned = _probe("tuned")
    assert tuned["tuned"] is True
    # ~10,000 pages per activation; measured here ~42,000 faults/step untuned and
    # ~2,500 tuned.
    assert plain["faults_per_step"] > 20_000
    assert tuned["faults_per_step"] < plain["faults_per_step"] / 5


@glibc
def test_user_malloc_env_is_left_alone() -> None:
    result = _probe("tuned", {"MALLOC_TOP_PAD_": "1048576"})
    assert result["tuned"] is False
    assert result["faults_per_step"] > 20_000


def test_not_glibc_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_tuned", False)
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    for var in allocator.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert allocator.tune_cpu_allocator() is False


@pytest.mark.parametrize("enabled", [True, False])
def test_trainer_tunes_only_when_asked(
    enabled: bool, tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixlab.train import loop

    calls: list[bool] = []
    monkeypatch.setattr(loop, "tune_cpu_allocator", lambda: calls.append(True) or True)
    cfg = RunConfig.from_dict(tiny_run_config(tiny_store, tune_malloc=enabled))
    loop.Trainer(cfg, tmp_path / "run")
    assert calls == ([True] if enabled else [])
