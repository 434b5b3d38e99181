"""torchrun on 2 CPU processes (gloo): DDP and FSDP2 with synchronized mixing, and resume.

Each test launches ``python -m torch.distributed.run --standalone --nproc-per-node 2`` on
:mod:`tests.train.ddp_worker` (or on ``-m mixlab``), so it exercises exactly what users run.
Each takes 6-16 s, so all but ``test_cli_under_torchrun`` are ``slow`` (``pytest -m slow``);
tests/integrations/test_controller.py checks the mixer's all-reduce on 2 ranks by default.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mixlab.config import RunConfig
from mixlab.train.callbacks import read_metrics
from mixlab.train.checkpoint import load_checkpoint
from mixlab.train.loop import train
from tests.conftest import tiny_run_config
from tests.helpers import torchrun

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).with_name("ddp_worker.py")
ACODM = {"hidden": 16, "n_hidden": 1, "batch_size": 4, "buffer_size": 50, "warmup_steps": 4}


def config(store: Path, mixing: dict[str, Any], **train_kw: Any) -> dict[str, Any]:
    kw = {"max_steps": 8, "batch_size": 4, "log_every": 1, "eval_every": 0, **train_kw}
    raw = tiny_run_config(store, **kw)
    raw["mixing"] = mixing
    return raw


def run_worker(tmp: Path, raw: dict[str, Any], run_dir: Path, nproc: int = 2, **spec: Any) -> None:
    path = tmp / f"spec-{run_dir.name}-{len(list(tmp.glob('spec-*')))}.json"
    path.write_text(json.dumps({"config": raw, "run_dir": str(run_dir), **spec}))
    torchrun([str(WORKER), str(path)], nproc=nproc)


def ranks(run_dir: Path, suffix: str = "") -> list[list[dict[str, Any]]]:
    return [json.loads((run_dir / f"rank{r}{suffix}.json").read_text()) for r in (0, 1)]


ODM = {"name": "odm-smoothed", "odm": {"warmup_steps": 2}}


@pytest.fixture(scope="module")
def odm_ddp(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """An uninterrupted 2-rank ODM run, shared by the equivalence and the resume tests."""
    tmp = tmp_path_factory.mktemp("odm-ddp")
    raw = config(tiny_store, ODM)
    run_worker(tmp, raw, tmp / "ddp")
    return raw, tmp / "ddp"


def check_ddp_run(run_dir: Path, raw: dict[str, Any], tmp_path: Path) -> None:
    r0, r1 = ranks(run_dir)
    assert [r["step"] for r in r0] == list(range(1, 9))
    for a, b in zip(r0, r1, strict=True):
        assert a["weights"] == b["weights"], a["step"]  # bit-identical on both ranks
        assert a["loss"] == b["loss"]
    # One process with twice the gradient accumulation sees the same global batches.
    single = RunConfig.from_dict({**raw, "train": {**raw["train"], "grad_accum": 2}})
    train(single, tmp_path / "single")
    curve = {
        r["step"]: r["train/loss"] for r in read_metrics(tmp_path / "single") if "train/loss" in r
    }
    np.testing.assert_allclose([r["loss"] for r in r0], [curve[s] for s in range(1, 9)], rtol=2e-4)
    if raw["mixing"]["name"] != "uniform":
        assert r0[-1]["weights"] != r0[0]["weights"]  # the mixture really moved
    metrics = read_metrics(run_dir)
    assert [r["step"] for r in metrics if "train/loss" in r] == list(range(1, 9))  # rank 0 only
    assert load_checkpoint(run_dir)["world_size"] == 2


@pytest.mark.slow
def test_ddp_odm_ranks_agree_and_match_one_process(
    odm_ddp: tuple[dict, Path], tmp_path: Path
) -> None:
    check_ddp_run(odm_ddp[1], odm_ddp[0], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mixing", [{"name": "uniform"}, {"name": "acodm", "acodm": ACODM}], ids=["uniform", "acodm"]
)
def test_ddp_ranks_agree_and_match_one_process(
    tiny_store: Path, tmp_path: Path, mixing: dict[str, Any]
) -> None:
    raw = config(tiny_store, mixing, batch_size=8 if mixing["name"] == "acodm" else 4)
    run_worker(tmp_path, raw, tmp_path / "ddp")
    check_ddp_run(tmp_path / "ddp", raw, tmp_path)


@pytest.mark.slow
def test_ddp_resume_and_resume_on_one_process(odm_ddp: tuple[dict, Path], tmp_path: Path) -> None:
    raw, full_dir = odm_ddp
    run_worker(tmp_path, raw, tmp_path / "part", kill_at=4)
    assert load_checkpoint(tmp_path / "part")["step"] == 4
    shutil.copytree(tmp_path / "part", tmp_path / "part1")
    run_worker(tmp_path, raw, tmp_path / "part", resume=True)
    full, resumed = ranks(full_dir)[0], ranks(tmp_path / "part", "-resumed")[0]
    assert [r["step"] for r in resumed] == [5, 6, 7, 8]
    for a, b in zip(full[4:], resumed, strict=True):
        assert a["weights"] == b["weights"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    # The same checkpoint continues in ONE process: grad_accum doubles to keep the batch.
    train(RunConfig.from_dict(raw), tmp_path / "part1", resume=True)
    state = load_checkpoint(tmp_path / "part1")
    assert state["finished"] and state["world_size"] == 1 and state["step"] == 8
    assert state["config"]["train"]["grad_accum"] == 2
    curve = {
        r["step"]: r["train/loss"] for r in read_metrics(tmp_path / "part1") if "train/loss" in r
    }
    np.testing.assert_allclose(
        [curve[s] for s in range(5, 9)], [r["loss"] for r in full[4:]], rtol=2e-4
    )


@pytest.mark.slow
def test_fsdp_with_acodm_trains_saves_and_resumes(tiny_store: Path, tmp_path: Path) -> None:
    raw = config(
        tiny_store,
        # the held-out pass of the mixlab variant does not run under FSDP: the paper's reward
        {"name": "acodm", "acodm": {**ACODM, "variant": "paper"}},
        batch_size=8,
        distributed="fsdp",
        checkpoint_every=100,
        eval_every=4,
    )
    run_worker(tmp_path, raw, tmp_path / "fsdp", kill_at=5)
    run_worker(tmp_path, raw, tmp_path / "fsdp", resume=True)
    r0, r1 = ranks(tmp_path / "fsdp", "-resumed")
    assert [r["step"] for r in r0] == [6, 7, 8]
    assert all(a["weights"] == b["weights"] for a, b in zip(r0, r1, strict=True))
    state = load_checkpoint(tmp_path / "fsdp")
    assert state["finished"] and state["policy"]["agent"]["updates"] > 0
    # The checkpoint holds ordinary full tensors: one process evaluates it.
    from mixlab.eval.runs import evaluate_run

    result = evaluate_run(tmp_path / "fsdp", write=False)
    assert np.all(np.isfinite(result.losses()))
    last = [r for r in read_metrics(tmp_path / "fsdp") if "train/loss" in r][-1]
    assert np.isfinite(last["mix/acodm/reward/code"]) and last["train/loss"] < 6.5


def test_cli_under_torchrun(tiny_store: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    RunConfig.from_dict(config(tiny_store, {"name": "natural"}, max_steps=4)).save(cfg)
    torchrun(["-m", "mixlab", "train", "--config", str(cfg), "--out", str(tmp_path / "cli")])
    assert load_checkpoint(tmp_path / "cli")["finished"]
    assert (tmp_path / "cli" / "eval.json").is_file()
