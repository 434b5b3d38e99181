"""Fault injection: ``kill -9`` in the middle of a checkpoint write.

A child process writes a checkpoint with the real writer, which is made to stop after part of
the temporary file is on disk; the test then kills it with SIGKILL. What must hold: the
previous checkpoint is intact and loads, the half-written ``.checkpoint.pt.tmp-<pid>`` is left
(that is what a kill does), and the next start or resume removes it. The default run cuts the
write once; ``-m slow`` cuts it at many random points.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mixlab.config import RunConfig
from mixlab.train.checkpoint import load_checkpoint, save_checkpoint
from mixlab.train.loop import train
from mixlab.train.run_folder import RunFolder
from tests.conftest import tiny_run_config

# Makes torch.save write the first `cut` share of the payload, then wait to be killed.
_BLOCKING_SAVE = r"""
import io, os, sys, time
from pathlib import Path
import torch

_real_save = torch.save
_marker = Path(sys.argv[1])
_cut = float(sys.argv[2])
_calls = {"n": 0}
_block_at = int(sys.argv[3])


def _save(obj, fh, *args, **kwargs):
    _calls["n"] += 1
    if _calls["n"] < _block_at:
        return _real_save(obj, fh, *args, **kwargs)
    buf = io.BytesIO()
    _real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    fh.write(data[: int(len(data) * _cut)])
    fh.flush()
    _marker.with_suffix(".part").write_text(str(len(data)))
    os.replace(_marker.with_suffix(".part"), _marker)  # whole when the test sees it
    time.sleep(3600)


torch.save = _save
"""

_WRITE_TWO_CHECKPOINTS = r"""
from mixlab.train.checkpoint import save_checkpoint
run = Path(sys.argv[4])
save_checkpoint(run / "checkpoint.pt", {"step": 1, "model": {"w": torch.arange(10.0)}})
torch.manual_seed(0)
save_checkpoint(run / "checkpoint.pt", {"step": 2, "model": {"w": torch.randn(2_000_000)}})
"""

_TRAIN = r"""
from mixlab.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _kill_when_blocked(cmd: list[str], marker: Path) -> int:
    """Run ``cmd``, wait until it reports the blocked write, SIGKILL it; returns its pid."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the writer exited ({proc.returncode}) before blocking")
            if time.monotonic() > deadline:
                raise AssertionError("the writer never reached the blocked write")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    return proc.pid


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _kill_mid_checkpoint(tmp_path: Path, cut: float) -> None:
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "blocked"
    script = _BLOCKING_SAVE + _WRITE_TWO_CHECKPOINTS
    pid = _kill_when_blocked(
        [sys.executable, "-c", script, str(marker), str(cut), "2", str(run)], marker
    )
    leftover = run / f".{RunFolder.CHECKPOINT}.tmp-{pid}"
    assert _temporaries(run) == [leftover.name]
    assert leftover.stat().st_size == int(int(marker.read_text()) * cut)

    state = load_checkpoint(run)  # a resume: the previous checkpoint, and no leftover
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.arange(10.0))
    assert _temporaries(run) == []


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path: Path) -> None:
    _kill_mid_checkpoint(tmp_path, cut=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_kill_at_random_points_of_a_checkpoint_write(tmp_path: Path, seed: int) -> None:
    cut = (0.0, 1.0)[seed] if seed < 2 else random.Random(seed).random()
    _kill_mid_checkpoint(tmp_path, cut=cut)


def test_a_killed_training_resumes_from_the_last_checkpoint_and_leaves_nothing(
    tmp_path: Path, tiny_store: Path
) -> None:
    """`mixlab train` killed while writing its second checkpoint, then `--resume`."""
    raw = tiny_run_config(tiny_store, max_steps=12, checkpoint_every=6, eval_every=0)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    run, marker = tmp_path / "run", tmp_path / "blocked"
    script = _BLOCKING_SAVE + _TRAIN
    args = ["train", "--config", str(config), "--out", str(run)]
    pid = _kill_when_blocked([sys.executable, "-c", script, str(marker), "0.5", "2", *args], marker)
    assert _temporaries(run) == [f".{RunFolder.CHECKPOINT}.tmp-{pid}"]
    assert load_checkpoint(run / RunFolder.CHECKPOINT)["step"] == 6  # the previous one, intact
    assert _temporaries(run) == []  # loading it cleared the leftover

    (run / f".{RunFolder.CHECKPOINT}.tmp-{pid}").write_bytes(b"torn")  # as the kill left it
    trainer = train(RunConfig.from_dict(raw), run, resume=True)
    assert trainer.step == 12 and load_checkpoint(run)["finished"]
    assert _temporaries(run) == []


def test_save_removes_what_a_killed_first_save_left(tmp_path: Path, dead_pid: int) -> None:
    """A run killed during its first checkpoint has nothing to resume; its next start
    (a fresh run in the same folder) removes the leftover when it saves."""
    leftover = tmp_path / f".{RunFolder.CHECKPOINT}.tmp-{dead_pid}"
    leftover.write_bytes(b"torn")
    save_checkpoint(tmp_path / RunFolder.CHECKPOINT, {"step": 1})
    assert _temporaries(tmp_path) == [] and load_checkpoint(tmp_path)["step"] == 1
