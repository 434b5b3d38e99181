"""The suite runner on a tiny real store: stages, skipping, resuming, failures, the manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixlab.comparison import SuiteFailed, parse_suite, run_suite
from mixlab.comparison.runner import MANIFEST_NAME
from mixlab.errors import ConfigError
from mixlab.train.callbacks import read_metrics
from mixlab.train.run_folder import RunFolder


def tiny_suite(store: Path, **train: int) -> dict:
    return {
        "name": "tiny",
        "base": {
            "data": {"store": str(store), "seq_len": 32},
            "model": {"preset": "llama-tiny"},
            "train": {
                "max_steps": 8,
                "batch_size": 8,
                "warmup_steps": 1,
                "eval_every": 4,
                "log_every": 2,
                "checkpoint_every": 4,
                **train,
            },
            "eval": {"max_tokens_per_domain": 1000},
        },
        "include_baselines": False,  # uniform and natural only: the runner, not the baselines
        "runs": [
            {"name": "uniform", "set": {"mixing.name": "uniform"}},
            {"name": "natural", "set": {"mixing.name": "natural"}},
            {
                "name": "transfer",
                "stages": [
                    {
                        "name": "proxy",
                        "set": {
                            "mixing.name": "acodm",
                            "mixing.policy_out": "{dir}/policy.acodm.pt",
                        },
                    }
                ],
                "set": {
                    "mixing.name": "acodm",
                    "mixing.policy_in": "{stage:proxy}/policy.acodm.pt",
                },
            },
        ],
    }


@pytest.mark.slow  # ~30 s: 4 processes, twice
def test_suite_runs_stages_records_costs_and_skips_finished(
    tmp_path: Path, tiny_store: Path
) -> None:
    out = tmp_path / "suite"
    lines: list[str] = []
    suite = parse_suite(tiny_suite(tiny_store))
    manifest_path = run_suite(suite, out, jobs=2, echo=lines.append)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["methods"] == ["uniform", "natural", "transfer"]
    assert [r["status"] for r in manifest["runs"]] == ["done"] * 3
    transfer = manifest["runs"][2]
    assert transfer["tokens"] == 8 * 8 * 32
    assert transfer["seconds"] > 0 and transfer["peak_rss_mb"] > 50
    (stage,) = transfer["stages"]
    assert stage["name"] == "proxy" and stage["tokens"] == 8 * 8 * 32
    assert (out / stage["dir"] / "policy.acodm.pt").exists()
    assert (out / "transfer" / "seed0" / "eval.json").exists()
    # a second run of the same suite reuses every finished folder, "done" from its start
    again: list[str] = []
    at_start: list[dict] = []

    def watch(line: str) -> None:
        if not at_start:
            at_start.append(json.loads(manifest_path.read_text()))
        again.append(line)

    run_suite(suite, out, echo=watch)
    assert sum("finished before" in line for line in again) == 4
    assert [r["status"] for r in at_start[0]["runs"]] == ["done"] * 3
    assert at_start[0]["runs"][2]["stages"][0]["tokens"] == 8 * 8 * 32
    # asking for other settings in a finished folder is an error, not a silent mix
    changed = parse_suite(tiny_suite(tiny_store, max_steps=9))
    with pytest.raises(ConfigError, match=r"other settings \(train\.max_steps: 8 there, 9 now"):
        run_suite(changed, out)


def test_a_failed_run_is_reported_and_the_rest_finishes(tmp_path: Path, tiny_store: Path) -> None:
    raw = tiny_suite(tiny_store)
    raw["runs"] = [
        {"name": "broken", "set": {"mixing.name": "fixed", "mixing.weights_file": "missing.json"}}
    ]
    raw["include_baselines"] = False
    raw["runs"].append({"name": "uniform", "set": {"mixing.name": "uniform"}})
    raw["baseline"] = "uniform"
    lines: list[str] = []
    with pytest.raises(SuiteFailed, match="1 of 2 job"):
        run_suite(parse_suite(raw), tmp_path / "s", echo=lines.append)
    manifest = json.loads((tmp_path / "s" / MANIFEST_NAME).read_text())
    assert [r["status"] for r in manifest["runs"]] == ["failed", "done"]
    assert any("FAILED" in line and "missing.json" in "\n".join(lines) for line in lines)


@pytest.mark.slow  # ~17 s; the failed-run test above is the default run's suite check
def test_interrupted_compare_resumes(tmp_path: Path, tiny_store: Path, dead_pid: int) -> None:
    """`kill` (SIGTERM) of `mixlab compare` mid-run, then the same command again.

    The suite passes the interrupt on to its run, which checkpoints (as on Ctrl-C).
    """
    import yaml

    raw = tiny_suite(tiny_store, max_steps=150, checkpoint_every=2, eval_every=150)
    raw["runs"] = [{"name": "uniform", "set": {"mixing.name": "uniform"}}]
    raw["include_baselines"] = False
    suite_file = tmp_path / "suite.yaml"
    suite_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mixlab", "compare", str(suite_file), "--out", str(out)]
    cmd.append("--no-report")
    proc = subprocess.Popen(cmd, start_new_session=True)
    ckpt = out / "uniform" / "seed0" / "checkpoint.pt"
    deadline = time.time() + 120
    try:
        while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert ckpt.exists(), "the run never wrote a checkpoint"
        os.kill(proc.pid, signal.SIGTERM)  # the suite alone; it must stop its run
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not RunFolder(out / "uniform" / "seed0").cost.exists(), "the run finished too early"
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["runs"][0]["status"] == "pending"
    # what a kill -9 of the suite or of its run in mid-write would have left
    leftovers = [
        out / f".{MANIFEST_NAME}.tmp-{dead_pid}",
        ckpt.with_name(f".{ckpt.name}.tmp-{dead_pid}"),
    ]
    for path in leftovers:
        path.write_bytes(b"torn")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not any(p.exists() for p in leftovers)
    log = (out / "uniform" / "seed0" / "run.log").read_text()
    assert "--resume" in log
    steps = [r["step"] for r in read_metrics(out / "uniform" / "seed0") if "train/loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 150
    assert json.loads((out / MANIFEST_NAME).read_text())["runs"][0]["status"] == "done"


@pytest.mark.slow  # five processes (~1 min on 2 busy cores); the search itself: tests/search
def test_search_stage_runs_its_swarm_and_feeds_the_main_run(
    tmp_path: Path, tiny_store: Path
) -> None:
    raw = tiny_suite(tiny_store, max_steps=4, eval_every=0, checkpoint_every=2)
    raw["include_baselines"] = False
    raw["baseline"] = "search"
    raw["runs"] = [
        {
            "name": "search",
            "stages": [
                {
                    "name": "swarm",
                    "kind": "search",
                    "search": {
                        "target": {"max_steps": 16},
                        "swarm": {"runs": 2, "corners": False, "prior": "uniform"},
                        "fit": {"bootstrap": 0},
                        "allow_unrecommended": True,
                    },
                }
            ],
            "set": {
                "mixing.name": "fixed",
                "mixing.weights_file": "{stage:swarm}/search_weights.json",
            },
        }
    ]
    out = tmp_path / "suite"
    manifest = json.loads(run_suite(parse_suite(raw), out, echo=lambda _: None).read_text())
    (run,) = manifest["runs"]
    (stage,) = run["stages"]
    assert run["status"] == "done" and stage["kind"] == "search"
    assert stage["tokens"] == 3 * 4 * 8 * 32  # the swarm's three proxies
    folder = out / stage["dir"]
    weights = json.loads((folder / "search_weights.json").read_text())["weights"]
    swarm = json.loads((folder / "swarm" / MANIFEST_NAME).read_text())
    assert len(swarm["runs"]) == 3 and all(r["status"] == "done" for r in swarm["runs"])
    main_metrics = [r for r in read_metrics(out / run["dir"]) if "train/loss" in r]
    for domain, w in weights.items():
        assert main_metrics[-1][f"mix/weight/{domain}"] == pytest.approx(w)
    lines: list[str] = []
    run_suite(parse_suite(raw), out, echo=lines.append)
    assert sum("finished before" in line for line in lines) == 2


def test_a_folder_saved_before_a_new_option_existed_is_not_other_settings() -> None:
    from mixlab.config import RunConfig, resolved

    now = RunConfig().to_dict()
    older = {**now, "train": {k: v for k, v in now["train"].items() if k != "max_nonfinite_steps"}}
    assert resolved(older) == now  # the option added since takes its default
    assert resolved({**now, "train": {**now["train"], "max_steps": 7}}) != now


def test_the_manifest_keeps_earlier_runs_of_the_same_folder(
    tmp_path: Path, tiny_store: Path
) -> None:
    """A compare with other seeds or methods into the same --out adds to suite.json instead of
    replacing it (the report reads the folder through it); a run whose folder is gone is
    dropped; the current plan's entries win."""
    from mixlab.comparison.runner import JobState, _earlier_runs, _write_manifest

    out = tmp_path / "suite"

    def write(suite_raw: dict, **select: list) -> dict:
        suite = parse_suite(suite_raw).select(**select)
        states = [JobState(job, status="done") for job in suite.plan(out)]
        earlier = _earlier_runs(out, {(s.job.method, s.job.seed) for s in states})  # as run_suite
        for state in states:
            state.job.dir.mkdir(parents=True, exist_ok=True)
        _write_manifest(out, suite, states, earlier)
        return json.loads((out / MANIFEST_NAME).read_text())

    first = write(tiny_suite(tiny_store))
    assert {(r["method"], r["seed"]) for r in first["runs"]} == {
        ("uniform", 0),
        ("natural", 0),
        ("transfer", 0),
    }
    more = write({**tiny_suite(tiny_store), "seeds": [1]}, only=["uniform"])
    assert {(r["method"], r["seed"]) for r in more["runs"]} == {
        ("uniform", 1),
        ("uniform", 0),
        ("natural", 0),
        ("transfer", 0),
    }
    assert more["seeds"] == [0, 1] and more["methods"] == ["uniform", "natural", "transfer"]
    assert more["runs"][0]["seed"] == 1  # this plan's entries first
    (out / "natural" / "seed0").rmdir()
    again = write({**tiny_suite(tiny_store), "seeds": [1]}, only=["uniform"])
    assert ("natural", 0) not in {(r["method"], r["seed"]) for r in again["runs"]}
    assert len(again["runs"]) == 3


@pytest.mark.slow  # ~15 s: 3 processes
def test_runs_branch_from_a_shared_trunk(tmp_path: Path, tiny_store: Path) -> None:
    raw = tiny_suite(tiny_store)
    trunk = {
        "name": "trunk",
        "shared": True,
        "set": {"mixing.name": "uniform", "train.max_steps": 4, "train.schedule_steps": 8},
    }
    raw["runs"] = [
        {
            "name": name,
            "stages": [trunk],
            "set": {"mixing.name": name, "train.branch_from": "{stage:trunk}"},
        }
        for name in ("uniform", "natural")
    ]
    out = tmp_path / "suite"
    lines: list[str] = []
    run_suite(parse_suite(raw), out, jobs=2, echo=lines.append)
    assert sum(" running -> _shared/seed0/trunk/" in line for line in lines) == 1
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert [r["tokens"] for r in manifest["runs"]] == [4 * 8 * 32] * 2
    rows = {
        name: [
            r for r in read_metrics(RunFolder(out / name / "seed0").metrics) if "train/loss" in r
        ]
        for name in ("uniform", "natural")
    }
    # the branches start from the same trunk (its rows are copied) and differ after step 4
    assert [r["step"] for r in rows["natural"]] == [2, 4, 6, 8]
    assert rows["natural"][:2] == rows["uniform"][:2]
    assert rows["natural"][3]["train/loss"] != rows["uniform"][3]["train/loss"]
