"""The executor seam: the runner's bookkeeping through a scripted executor, the local executor.

The scripted executor runs nothing: it records each :class:`Launch` and answers with the
:class:`Exit` the test chose, so the runner's part (skip, resume, costs, failures) is checked
without training. The local executor runs a tiny module of the test's own.
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mixlab.cli import main
from mixlab.comparison import SuiteFailed, make_executor, parse_suite, run_suite
from mixlab.comparison.executor import Exit, Launch, LocalExecutor, StepError
from mixlab.comparison.runner import MANIFEST_NAME
from mixlab.config import RunConfig
from mixlab.errors import ConfigError
from mixlab.train.run_folder import RunFolder


class ScriptedExecutor:
    """Answers launches from a list of outcomes (an Exit or a StepError), in order."""

    name = "scripted"

    def __init__(self, outcomes: list[Exit | StepError]) -> None:
        self.outcomes = outcomes
        self.launches: list[Launch] = []
        self.opened = self.closed = 0

    def open(self) -> str | None:
        self.opened += 1
        return "the scripted cluster"

    def close(self) -> None:
        self.closed += 1

    def slots(self, jobs: int | None, n_jobs: int) -> int:
        return 1

    def threads(self, config: RunConfig, slots: int) -> int | None:
        return config.train.threads or 3

    def run(self, launch: Launch) -> Exit:
        self.launches.append(launch)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, StepError):
            raise outcome
        return outcome

    def interrupt(self, grace: float) -> None:  # pragma: no cover - no Ctrl-C here
        pass


def one_run_suite(store: Path) -> dict:
    return {
        "name": "seam",
        "base": {
            "data": {"store": str(store), "seq_len": 32},
            "model": {"preset": "llama-tiny"},
            "train": {"max_steps": 5, "batch_size": 2},
        },
        "runs": [{"name": "uniform", "set": {"mixing.name": "uniform"}}],
        "include_baselines": False,
    }


def test_runner_bookkeeping_through_an_executor(tmp_path: Path, tiny_store: Path) -> None:
    suite = parse_suite(one_run_suite(tiny_store))
    out = tmp_path / "suite"
    folder = RunFolder(out / "uniform" / "seed0")
    lines: list[str] = []
    failing = ScriptedExecutor([Exit(143, 2.0, 40.0, "node-a")])
    with pytest.raises(SuiteFailed, match="1 of 1 job"):
        run_suite(suite, out, executor=failing, echo=lines.append)
    assert failing.opened == failing.closed == 1
    assert "on the scripted cluster" in lines[0]
    (launch,) = failing.launches
    assert launch.args[:2] == ("train", "--config") and "--resume" not in launch.args
    assert launch.dir == folder.path and launch.log == folder.run_log
    assert launch.threads == 3 and launch.env["OMP_NUM_THREADS"] == "3"
    assert launch.cwd == Path.cwd() and launch.label == "uniform seed 0"
    # a retry of this launch (its node died) continues what the first attempt saved
    assert launch.retry_checkpoint == folder.checkpoint
    assert "--resume" not in launch.command()
    folder.checkpoint.write_bytes(b"a checkpoint")
    assert launch.command()[-1] == "--resume"
    assert json.loads(folder.partial_cost.read_text()) == {"seconds": 2.0, "peak_rss_mb": 40.0}
    # the attempt left a checkpoint: the next launch resumes it, and the costs add up
    resuming = ScriptedExecutor([Exit(0, 3.0, 30.0, "node-b")])
    lines.clear()
    run_suite(suite, out, executor=resuming, echo=lines.append)
    assert resuming.launches[0].args[-1] == "--resume"
    assert resuming.launches[0].retry_checkpoint is None
    assert any("done in 0m05s on node-b (suite " in line for line in lines)
    cost = json.loads(folder.cost.read_text())
    assert cost == {"seconds": 5.0, "tokens": 5 * 2 * 32, "peak_rss_mb": 40.0}
    assert not folder.partial_cost.exists()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["runs"][0]["status"] == "done" and manifest["runs"][0]["seconds"] == 5.0
    # finished: nothing is launched again
    idle = ScriptedExecutor([])
    run_suite(suite, out, executor=idle, echo=lambda _: None)
    assert idle.launches == []


def test_a_step_the_executor_lost_is_a_failed_run(tmp_path: Path, tiny_store: Path) -> None:
    suite = parse_suite(one_run_suite(tiny_store))
    lost = ScriptedExecutor([StepError("lost on the cluster after 3 retries")])
    with pytest.raises(SuiteFailed):
        run_suite(suite, tmp_path / "s", executor=lost, echo=lambda _: None)
    run = json.loads((tmp_path / "s" / MANIFEST_NAME).read_text())["runs"][0]
    assert run["status"] == "failed" and run["error"] == "lost on the cluster after 3 retries"


# ---------------------------------------------------------------------------- local executor
FAKE_STEP = """\
import os, signal, sys, time
out = sys.argv[1]
def stop(signum, frame):
    open(os.path.join(out, "checkpointed"), "w").close()
    sys.exit(7)
signal.signal(signal.SIGTERM, stop)
block = bytearray(int(sys.argv[2]) * 1024 * 1024)  # peak RSS the executor should see
print("started in", os.getcwd(), flush=True)
open(os.path.join(out, "started"), "w").close()
time.sleep(float(sys.argv[3]))
"""


def fake_launch(tmp_path: Path, *, mb: int = 64, sleep: float = 0.0) -> Launch:
    """A launch of a tiny module that allocates ``mb`` MB, sleeps, checkpoints on SIGTERM."""
    (tmp_path / "fake_step.py").write_text(textwrap.dedent(FAKE_STEP))
    step = tmp_path / "step"
    step.mkdir(exist_ok=True)
    return Launch(
        args=(str(step), str(mb), str(sleep)),
        dir=step,
        log=step / "run.log",
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        module="fake_step",
    )


def wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_local_executor_runs_and_measures_a_process(tmp_path: Path) -> None:
    launch = fake_launch(tmp_path, mb=64)
    done = LocalExecutor().run(launch)
    assert done.code == 0 and done.node is None and done.seconds > 0
    assert done.peak_rss_mb is not None and done.peak_rss_mb > 64
    log = launch.log.read_text()
    assert log.startswith(f"\n$ {sys.executable} -m fake_step ") and "started in" in log


def test_local_executor_interrupt_sends_sigterm(tmp_path: Path) -> None:
    launch = fake_launch(tmp_path, mb=1, sleep=120)
    executor = LocalExecutor()
    result: list[Exit] = []
    worker = threading.Thread(target=lambda: result.append(executor.run(launch)))
    worker.start()
    wait_for(launch.dir / "started")
    executor.interrupt(grace=0.0)
    worker.join(timeout=60)
    assert result and result[0].code == 7
    assert (launch.dir / "checkpointed").exists()


# ---------------------------------------------------------------------------- choosing one
def test_make_executor_checks_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_executor(), LocalExecutor)
    with pytest.raises(ConfigError, match="'slurm' is not one of local, ray"):
        make_executor("slurm")
    with pytest.raises(ConfigError, match="--ray-address, --gpus-per-run: only with --executor"):
        make_executor("local", ray_address="head:6379", gpus_per_run=1)
    with pytest.raises(ConfigError, match="--gpus-per-run: must be >= 0"):
        make_executor("ray", gpus_per_run=-1)
    ray_executor = make_executor("ray", ray_address="head:6379", gpus_per_run=0.5)
    assert ray_executor.slots(None, 7) == 7 and ray_executor.slots(2, 7) == 2
    config = RunConfig()
    assert ray_executor.threads(config, 7) == 1  # train.threads 0: one CPU, OMP_NUM_THREADS=1
    config.train.threads = 4
    assert ray_executor.threads(config, 7) == 4
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'mixlab\[ray\]'"):
        ray_executor.open()


def test_cli_refuses_ray_options_without_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\nbase: {data: {store: shards}}\nruns: []\n")
    argv = ["compare", str(suite), "--out", str(tmp_path / "o"), "--ray-address", "head:6379"]
    assert main(argv) == 2
    assert "--ray-address: only with --executor ray" in capsys.readouterr().err


# ---------------------------------------------------------------------------- shared stages
class SideBySide(ScriptedExecutor):
    """Two slots; each launch takes a moment, so the other thread picks while it runs."""

    def slots(self, jobs: int | None, n_jobs: int) -> int:
        return 2

    def run(self, launch: Launch) -> Exit:
        time.sleep(0.2)
        return super().run(launch)


def branched_suite(store: Path) -> dict:
    trunk = {
        "name": "trunk",
        "shared": True,
        "set": {"mixing.name": "uniform", "train.max_steps": 2, "train.schedule_steps": 5},
    }
    raw = one_run_suite(store)
    raw["seeds"] = [0, 1]
    raw["runs"] = [
        {
            "name": name,
            "stages": [trunk],
            "set": {"mixing.name": name, "train.branch_from": "{stage:trunk}"},
        }
        for name in ("uniform", "natural")
    ]
    return raw


def test_a_shared_stage_runs_once_per_seed(tmp_path: Path, tiny_store: Path) -> None:
    suite = parse_suite(branched_suite(tiny_store))
    out = tmp_path / "suite"
    ok = Exit(0, 1.0, 10.0, None)
    executor = SideBySide([ok] * 6)
    lines: list[str] = []
    run_suite(suite, out, executor=executor, echo=lines.append)
    dirs = [launch.dir.relative_to(out).as_posix() for launch in executor.launches]
    # the two seeds' trunks first, side by side (no thread waits for the other's trunk)
    assert sorted(dirs[:2]) == ["_shared/seed0/trunk", "_shared/seed1/trunk"]
    assert sorted(dirs[2:]) == [f"{m}/seed{s}" for m in ("natural", "uniform") for s in (0, 1)]
    assert "4 job(s), 6 process(es), 2 at a time" in lines[0]
    assert sum("finished before, reusing _shared/" in line for line in lines) == 2
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    for run in manifest["runs"]:
        (stage,) = run["stages"]
        assert stage["shared"] is True and stage["dir"] == f"_shared/seed{run['seed']}/trunk"
        assert stage["tokens"] == 2 * 2 * 32 and run["tokens"] == 3 * 2 * 32  # 2 + 3 = 5 steps


def test_a_failed_shared_stage_fails_its_seeds_runs_once(tmp_path: Path, tiny_store: Path) -> None:
    raw = branched_suite(tiny_store)
    raw["seeds"] = [0]
    executor = ScriptedExecutor([StepError("the trunk ran out of memory")])
    lines: list[str] = []
    with pytest.raises(SuiteFailed, match="2 of 2 job"):
        run_suite(parse_suite(raw), tmp_path / "s", executor=executor, echo=lines.append)
    assert len(executor.launches) == 1  # not tried again by the second run
    runs = json.loads((tmp_path / "s" / MANIFEST_NAME).read_text())["runs"]
    assert [r["error"] for r in runs] == [
        "the trunk ran out of memory",
        "shared stage trunk: the trunk ran out of memory",
    ]
