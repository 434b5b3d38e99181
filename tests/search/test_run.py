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
from mixlab.comparison.runner import COST_NAME
from mixlab.comparison.suite import run_tokens
from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.mixing.budget import epochs, unimax_weights
from mixlab.mixing.static import read_weights_file
from mixlab.search.run import (
    PLAN_NAME,
    SWARM_DIR,
    SWARM_NAME,
    WEIGHTS_NAME,
    plan_search,
    run_search,
)
from mixlab.search.spec import parse_search_spec
from tests.conftest import tiny_run_config

PROXY_STEPS = 6


def _spec(store: Path, **sections: dict) -> dict:
    base = tiny_run_config(
        store, max_steps=PROXY_STEPS, eval_every=0, checkpoint_every=3, log_every=3
    )
    raw: dict = {
        "name": "tiny-search",
        "base": base,
        "target": {"max_steps": 4 * PROXY_STEPS},
        "swarm": {"runs": 3, "corners": False, "prior": "uniform", "max_epochs": 4},
        "fit": {"bootstrap": 5},
    }
    for key, value in sections.items():  # target is replaced, the other sections updated
        raw[key] = value if key == "target" else {**raw.get(key, {}), **value}
    return raw


def test_plan_matches_repetition_and_respects_caps(tiny_store: Path) -> None:
    plan = plan_search(parse_search_spec(_spec(tiny_store)))
    proxy = RunConfig.from_dict(_spec(tiny_store)["base"])
    assert plan.proxy_tokens == run_tokens(proxy) and plan.target_tokens == 4 * plan.proxy_tokens
    assert plan.subsample == pytest.approx(0.25)
    # the proxies repeat every domain about as often as the target (whole documents)
    assert np.allclose(plan.proxy_epochs(plan.prior), plan.target_epochs(plan.prior), rtol=0.1)
    assert len(plan.names) == 4 and plan.names[0] == "0-prior"
    suite = plan.suite()
    assert suite.seeds == [0] and [r.name for r in suite.runs] == list(plan.names)
    settings = dict(suite.runs[1].overrides)
    assert settings["mixing.name"] == "fixed" and settings["data.subsample"] == plan.subsample
    assert settings["train.eval_every"] == 0
    assert sum(settings["mixing.weights"].values()) == pytest.approx(1.0)

    # tight caps: every proposal stays within them at the target budget
    tight = plan_search(
        parse_search_spec(_spec(tiny_store, swarm={"max_epochs": 0.1, "prior": "unimax"}))
    )
    n = ShardStore(tiny_store).train_tokens_per_domain()
    assert np.allclose(tight.prior, unimax_weights(n, tight.target_tokens, 0.1))
    for w in tight.proposals.weights:
        assert (epochs(w, tight.target_tokens, n) <= 0.1 + 1e-9).all()
    off = plan_search(parse_search_spec(_spec(tiny_store, swarm={"repetition_matching": False})))
    assert off.subsample == 1.0


def test_plan_errors_name_the_field(tiny_store: Path) -> None:
    with pytest.raises(ConfigError, match=r"swarm\.max_epochs: nope"):
        plan_search(parse_search_spec(_spec(tiny_store, swarm={"max_epochs": {"nope": 2}})))
    with pytest.raises(ConfigError, match=r"eval\.domains: web"):
        plan_search(parse_search_spec(_spec(tiny_store, eval={"domains": ["web"]})))
    with pytest.raises(ConfigError, match="max_epochs"):  # the caps cannot fill the target
        plan_search(parse_search_spec(_spec(tiny_store, swarm={"max_epochs": 1e-4})))
    long_windows = _spec(tiny_store, target={"tokens": 10**9}, swarm={"max_epochs": None})
    long_windows["base"]["data"]["seq_len"] = 512  # longer than any one document
    with pytest.raises(ConfigError, match=r"data\.seq_len \+ 1 = 513"):  # subsample too small
        plan_search(parse_search_spec(long_windows))
    weighted = {"objective": "weighted", "objective_weights": {"web": 1.0}}
    with pytest.raises(ConfigError, match=r"fit\.objective_weights: web"):
        plan_search(parse_search_spec(_spec(tiny_store, fit=weighted)))
    with pytest.raises(ConfigError, match=r"swarm\.runs"):
        plan_search(parse_search_spec(_spec(tiny_store, swarm={"runs": 0})))


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_store: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = run_search(_spec(tiny_store), tmp_path / "s", dry_run=True, echo=lines.append)
    text = "\n".join(lines)
    assert "4 mixtures x 1 proxy seed(s) = 4 proxy runs" in text
    assert "data.subsample = 768 / 3,072 = 0.25" in text
    for name in outcome.plan.names:
        assert name in text
    assert outcome.result is None and not (tmp_path / "s").exists()


def test_search_end_to_end_resumes_refuses_and_refits(tiny_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "search"
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(tiny_store)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "mixlab", "search", str(spec_path), "--out", str(out)]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:  # kill the search once two proxy runs finished
        deadline = time.monotonic() + 600
        while len(list((out / SWARM_DIR).glob(f"*/seed0/{COST_NAME}"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    finished = {p.parent.parent.name for p in (out / SWARM_DIR).glob(f"*/seed0/{COST_NAME}")}
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
    with pytest.raises(ConfigError, match=r"swarm\.seed: 0 -> 1"):
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

    spec = _spec(tiny_store, swarm={"runs": 16, "max_epochs": None, "corners": True})
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


def test_shipped_specs_plan(tiny_store: Path) -> None:
    from mixlab.search.spec import load_search_spec

    specs = sorted((Path(__file__).parents[2] / "configs" / "search").glob("*.yaml"))
    assert specs
    for path in specs:
        # the tiny store is far smaller than the demo store: loosen the caps
        spec = load_search_spec(path, [f"base.data.store={tiny_store}", "swarm.max_epochs=40"])
        plan = plan_search(spec)
        assert plan.subsample < 1 and len(plan.names) >= 3 * len(plan.domains)
