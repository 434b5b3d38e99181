"""Planning a search on the tiny store: budgets, repetition matching, caps, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mixlab.comparison.suite import run_tokens
from mixlab.config import RunConfig
from mixlab.data.store import ShardStore
from mixlab.errors import ConfigError
from mixlab.mixing.budget import epochs, unimax_weights
from mixlab.search.plan import plan_search
from mixlab.search.spec import load_search_spec, parse_search_spec
from tests.search.synthetic import tiny_spec


def test_plan_matches_repetition_and_respects_caps(tiny_store: Path) -> None:
    plan = plan_search(parse_search_spec(tiny_spec(tiny_store)))
    proxy = RunConfig.from_dict(tiny_spec(tiny_store)["base"])
    assert plan.proxy_tokens == run_tokens(proxy) and plan.target_tokens == 4 * plan.proxy_tokens
    assert plan.subsample == pytest.approx(0.25)
    # the proxies repeat every domain about as often as the target (whole documents)
    assert np.allclose(plan.proxy_epochs(plan.prior), plan.target_epochs(plan.prior), rtol=0.1)
    assert len(plan.names) == 4 and plan.names[0] == "0-prior"
    suite = plan.suite()
    assert suite.seeds == [0] and [r.name for r in suite.runs] == list(plan.names)
    settings = dict(suite.runs[1].overrides)
    assert settings["mixing"]["name"] == "fixed" and settings["data.subsample"] == plan.subsample
    assert settings["train.eval_every"] == 0
    assert sum(settings["mixing"]["weights"].values()) == pytest.approx(1.0)
    # another policy's settings in the base do not reach the proxies; the sampling mode does
    raw = tiny_spec(tiny_store)
    raw["base"]["mixing"] = {"name": "odm", "sampling": "stratified", "odm": {"alpha": 0.5}}
    (job, *_) = plan_search(parse_search_spec(raw)).suite().plan("/tmp/never-written")
    mixing = job.main.config.to_dict()["mixing"]
    assert mixing["name"] == "fixed" and (mixing.get("odm") or {}).get("alpha") != 0.5
    assert job.main.config.mixing.sampling == "stratified"

    # tight caps: every proposal stays within them at the target budget
    tight = plan_search(
        parse_search_spec(tiny_spec(tiny_store, swarm={"max_epochs": 0.1, "prior": "unimax"}))
    )
    n = ShardStore(tiny_store).train_tokens_per_domain()
    assert np.allclose(tight.prior, unimax_weights(n, tight.target_tokens, 0.1))
    for w in tight.proposals.weights:
        assert (epochs(w, tight.target_tokens, n) <= 0.1 + 1e-9).all()
    off = plan_search(
        parse_search_spec(tiny_spec(tiny_store, swarm={"repetition_matching": False}))
    )
    assert off.subsample == 1.0


def test_plan_errors_name_the_field(tiny_store: Path) -> None:
    with pytest.raises(ConfigError, match=r"swarm\.max_epochs: nope"):
        plan_search(parse_search_spec(tiny_spec(tiny_store, swarm={"max_epochs": {"nope": 2}})))
    with pytest.raises(ConfigError, match=r"eval\.domains: web"):
        plan_search(parse_search_spec(tiny_spec(tiny_store, eval={"domains": ["web"]})))
    with pytest.raises(ConfigError, match="max_epochs"):  # the caps cannot fill the target
        plan_search(parse_search_spec(tiny_spec(tiny_store, swarm={"max_epochs": 1e-4})))
    long_windows = tiny_spec(tiny_store, target={"tokens": 10**9}, swarm={"max_epochs": None})
    long_windows["base"]["data"]["seq_len"] = 512  # longer than any one document
    with pytest.raises(ConfigError, match=r"data\.seq_len \+ 1 = 513"):  # subsample too small
        plan_search(parse_search_spec(long_windows))
    weighted = {"objective": "weighted", "objective_weights": {"web": 1.0}}
    with pytest.raises(ConfigError, match=r"fit\.objective_weights: web"):
        plan_search(parse_search_spec(tiny_spec(tiny_store, fit=weighted)))
    with pytest.raises(ConfigError, match=r"swarm\.runs"):
        plan_search(parse_search_spec(tiny_spec(tiny_store, swarm={"runs": 0})))


def test_shipped_specs_plan(tiny_store: Path) -> None:

    specs = sorted((Path(__file__).parents[2] / "configs" / "search").glob("*.yaml"))
    assert specs
    for path in specs:
        # the tiny store is far smaller than the demo store: loosen the caps
        spec = load_search_spec(path, [f"base.data.store={tiny_store}", "swarm.max_epochs=40"])
        plan = plan_search(spec)
        assert plan.subsample < 1 and len(plan.names) >= 3 * len(plan.domains)
