"""`mixlab search` on the tiny store: the plan, a dry run, a real swarm that resumes after a
kill, refuses another swarm in its folder, refits on a new fit section, and writes weights a
`fixed` run can read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixlab.cli import main
from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.mixing.static import read_weights_file
from mixlab.search.plan import plan_search
from mixlab.search.run import PLAN_NAME, SWARM_DIR, SWARM_NAME, WEIGHTS_NAME, run_search
from mixlab.search.spec import parse_search_spec
from mixlab.train.run_folder import RunFolder
from tests.conftest import tiny_run_config
from tests.search.synthetic import tiny_spec


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_store: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = run_search(tiny_spec(tiny_store), tmp_path / "s", dry_run=True, echo=lines.append)
    text = "\n".join(lines)
    assert "4 mixtures x 1 proxy seed(s) = 4 proxy runs" in text
    assert "data.subsample = 768 / 3,072 = 0.25" in text
    for name in outcome.plan.names:
        assert name in text
    assert outcome.result is None and not (tmp_path / "s").exists()


@pytest.mark.slow  # ~25 s: a swarm of proxy processes, killed and resumed
def test_search_end_to_end_resumes_refuses_and_refits(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "search"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec(tiny_store)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "mixlab", "search", str(spec_path), "--out", str(out)]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:  # kill the search once two proxy runs finished
        deadline = time.monotonic() + 600
        while len(list((out / SWARM_DIR).glob(f"*/seed0/{RunFolder.COST}"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finished = {p.parent.parent.name for p in (out / SWARM_DIR).glob(f"*/seed0/{RunFolder.COST}")}
    assert 2 <= len(finished) < 4
    assert not (out / WEIGHTS_NAME).exists()

    lines: list[str] = []
    outcome = run_search(spec_path, out, echo=lines.append)
    reused = [line for line in lines if "finished before" in line]
    assert len(reused) == len(finished)  # finished runs are not redone
    assert all(any(name in line for line in reused) for name in finished)

    # what the search wrote
    domains = ShardStore(tiny_store).domains
    record = json.loads((out / WEIGHTS_NAME).read_text())
    weights = read_weights_file(out / WEIGHTS_NAME, domains)  # what mixing.weights_file reads
    assert weights.sum() == pytest.approx(1.0)
    assert record["recommended"] is outcome.recommended
    assert set(record["epochs"]) == set(domains) and record["fit"]["runs"] == 4
    assert record["budget"]["proxy_total_tokens"] == 4 * outcome.plan.proxy_tokens
    swarm = json.loads((out / SWARM_NAME).read_text())
    assert [r["name"] for r in swarm["runs"]] == list(outcome.plan.names)
    for run in swarm["runs"]:
        saved = yaml.safe_load((out / run["dir"] / "seed0" / "config.yaml").read_text())
        assert saved["data"]["subsample"] == pytest.approx(0.25)
        assert saved["mixing"]["name"] == "fixed"
        assert saved["mixing"]["weights"] == pytest.approx(run["weights"])
        final = json.loads((out / run["dir"] / "seed0" / "eval.json").read_text())
        assert run["losses"]["code"] == pytest.approx(final["eval/code/loss"])
        assert set(run["heldout_predicted"]) == set(domains)
    cfg = RunConfig.from_dict(
        {
            **tiny_run_config(tiny_store),
            "mixing": {"name": "fixed", "weights_file": str(out / WEIGHTS_NAME)},
        }
    )
    cfg.validate()
    text = "\n".join(lines)
    assert "fit: loglinear law, leave-one-out over 4 mixtures" in text
    assert ("verdict: recommended" in text) is outcome.recommended

    # another swarm in the same folder is refused, naming what changed
    with pytest.raises(ConfigError, match=r"swarm\.seed: 0 there, 1 now"):
        run_search(spec_path, out, overrides=["swarm.seed=1"], echo=lines.append)
    # another fit refits the finished swarm without training
    lines.clear()
    refit = run_search(spec_path, out, overrides=["fit.law=linear"], echo=lines.append)
    assert sum("finished before" in line for line in lines) == 4
    assert refit.record is not None and refit.record["fit"]["law"] == "linear"
    assert json.loads((out / PLAN_NAME).read_text())["spec"]["fit"]["law"] == "linear"

    # the CLI's exit status is the verdict
    code = main(["search", str(spec_path), "--out", str(out)])
    assert code == (0 if outcome.recommended else 3)
    assert main(["search", str(spec_path), "--out", str(out), "--allow-unrecommended"]) == 0


def test_fit_swarm_recommends_the_optimum_of_a_clear_law(tiny_store: Path, tmp_path: Path) -> None:
    from mixlab.search.run import fit_swarm
    from mixlab.search.summary import format_outcome
    from tests.search.synthetic import true_law, write_finished_swarm

    spec = tiny_spec(tiny_store, swarm={"runs": 16, "max_epochs": None, "corners": True})
    plan = plan_search(parse_search_spec(spec))
    law = true_law(4, seed=2)
    write_finished_swarm(plan, tmp_path, law)
    outcome = fit_swarm(plan, tmp_path)
    assert outcome.recommended and outcome.weights is not None
    chosen = np.array([outcome.weights[d] for d in plan.domains])
    assert law(chosen).mean() < law(plan.prior).mean()  # better than the prior, truly
    record = outcome.record
    assert record is not None and record["budget"]["swarm_seconds"] == 2.0 * len(plan.names)
    assert record["prior_objective"] == pytest.approx(
        np.mean(list(record["prior_predicted"].values()))
    )
    text = format_outcome(outcome)
    assert "verdict: recommended" in text and "runner-ups:" in text
    assert f"mixing.weights_file={tmp_path / WEIGHTS_NAME}" in text
