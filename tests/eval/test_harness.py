"""`mixlab eval --lm-eval`: lm-evaluation-harness scores a run on the bundled local tasks and on
a user task folder with a plain local JSONL file, offline; results are a table and JSON."""

from __future__ import annotations

import json
import math
import os
import sys

import datasets
import huggingface_hub
import pytest

from mixlab.cli import main
from mixlab.errors import ConfigError
from mixlab.eval.harness import BUNDLED_TASKS, parse_tasks, run_harness
from mixlab.model.export import export_run
from tests.helpers import train_tiny_run

USER_TASK = """\
task: user_parity
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_choice: ["even", "odd"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def run(tiny_store, tmp_path_factory):
    return train_tiny_run(
        tiny_store, tmp_path_factory.mktemp("lm_eval") / "run", max_steps=8, eval_every=0
    )


def test_lm_eval_scores_the_bundled_local_tasks(run, tiny_store, tmp_path, capsys):
    rc = main(["eval", str(run), "--lm-eval", "mixlab", "--limit", "8", "--batch-size", "4"])
    assert rc == 0
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"
    # Loaded before the flags were set (by transformers), so the constants are flipped too.
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert datasets.config.HF_DATASETS_OFFLINE is True
    table = capsys.readouterr().out
    assert "mixlab_domain_cloze" in table and "bits_per_byte" in table
    results = json.loads((run / "lm_eval.json").read_text())["results"]
    cloze, text = results["mixlab_domain_cloze"], results["mixlab_domain_text"]
    assert cloze["sample_len"] == 8 and text["sample_len"] == 8
    assert 0.0 <= cloze["acc,none"] <= 1.0 and 0.0 <= cloze["acc_norm,none"] <= 1.0
    for key in ("bits_per_byte,none", "byte_perplexity,none", "word_perplexity,none"):
        assert math.isfinite(text[key]) and text[key] > 0
    # lm-eval scores *this* model: the trained run beats the same model barely trained.
    untrained = train_tiny_run(
        tiny_store, tmp_path / "untrained", max_steps=1, lr=1e-6, warmup_steps=0, eval_every=0
    )
    before = run_harness(untrained, ["mixlab_domain_text"], limit=8, batch_size=4)
    assert text["bits_per_byte,none"] < before.metrics()["mixlab_domain_text"]["bits_per_byte,none"]


def test_lm_eval_include_folder_on_an_exported_model(run, tmp_path, capsys):
    data = tmp_path / "parity.jsonl"
    rows = [{"question": f"{n} is", "answer": n % 2} for n in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "user_parity.yaml").write_text(USER_TASK.format(data=data))
    hf = export_run(run, tmp_path / "hf")
    out = tmp_path / "all.json"
    include = ["--lm-eval-include", str(tasks), "--json", str(out)]
    rc = main(["eval", str(hf), "--lm-eval", "user_parity,mixlab_domain_cloze", *include])
    assert rc == 0
    results = json.loads(out.read_text())[str(hf)]["results"]
    assert results["user_parity"]["sample_len"] == 6
    assert 0.0 <= results["user_parity"]["acc,none"] <= 1.0
    assert (hf / "lm_eval.json").is_file()


def test_task_names_and_bundled_folder():
    assert parse_tasks("a,b c") == ("a", "b", "c")
    assert parse_tasks(["a", "b,c"]) == ("a", "b", "c")
    with pytest.raises(ConfigError, match="at least one task"):
        parse_tasks(" , ")
    assert {p.name for p in BUNDLED_TASKS.glob("*.yaml")} == {
        "mixlab_domain_cloze.yaml",
        "mixlab_domain_text.yaml",
    }


def test_missing_lm_eval_names_the_extra(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ConfigError, match=r"pip install 'mixlab\[lm-eval\]'"):
        run_harness(run, ["mixlab"])
