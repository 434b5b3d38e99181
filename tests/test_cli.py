"""The `mixlab` command: help texts, prepare on Pile-format JSONL with malformed lines,
train, eval — each through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mixlab.cli import main
from tests.conftest import tiny_run_config, write_pile_jsonl


@pytest.mark.parametrize(
    "command", [[], ["prepare"], ["train"], ["eval"], ["compare"], ["report"], ["demo"]]
)
def test_help_explains_each_command(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mixlab" in out
    assert len(out) > 300  # a description, not just a usage line


def test_console_script_module_entry():
    out = subprocess.run(
        [sys.executable, "-m", "mixlab", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("mixlab ")


def test_prepare_pile_format_with_malformed_lines(tmp_path, capsys, caplog):
    data = write_pile_jsonl(tmp_path / "pile", docs_per_domain=40)
    with open(data / "part-0.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"text": "broken json\n')  # malformed
        fh.write('{"text": "", "meta": {"pile_set_name": "prose"}}\n')  # empty text
        fh.write('{"meta": {"pile_set_name": "prose"}}\n')  # no text field
    out = tmp_path / "shards"
    rc = main(
        [
            "prepare",
            "--input",
            str(data),
            "--domain-field",
            "meta.pile_set_name",
            "--metadata-field",
            "url",
            "--out",
            str(out),
            "--vocab-size",
            "400",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    # Reported with file and line (in the printed summary and once in the log).
    assert "part-0.jsonl:81: malformed_json" in printed
    assert "part-0.jsonl:83: missing_text" in printed
    logged = [r.getMessage() for r in caplog.records if "part-0.jsonl:81" in r.getMessage()]
    assert len(logged) == 1
    summary = json.loads((out / "ingest_summary.json").read_text())
    text = json.dumps(summary)
    assert "malformed_json" in text and "empty_text" in text

    rc = main(
        [
            "prepare",
            "--input",
            str(data),
            "--domain-field",
            "meta.pile_set_name",
            "--out",
            str(tmp_path / "strict"),
            "--on-error",
            "fail",
            "--no-progress",
        ]
    )
    assert rc == 2
    assert "part-0.jsonl:" in capsys.readouterr().err


def test_train_then_eval_from_the_cli(tiny_store, tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_run_config(tiny_store, max_steps=4, eval_every=0)))
    for name in ("natural", "uniform"):
        rc = main(
            [
                "train",
                "--config",
                str(recipe),
                "--set",
                f"mixing.name={name}",
                "--out",
                str(tmp_path / name),
            ]
        )
        assert rc == 0
    capsys.readouterr()
    rc = main(
        [
            "eval",
            str(tmp_path / "natural"),
            str(tmp_path / "uniform"),
            "--json",
            str(tmp_path / "all.json"),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "natural" in table and "uniform" in table and "mean_ppl" in table
    assert json.loads((tmp_path / "all.json").read_text())


def test_user_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    rc = main(
        [
            "train",
            "--set",
            "mixing.name=nope",
            f"data.store={tmp_path}",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_meco_train_then_conditional_eval_from_the_cli(tiny_store, tmp_path, capsys):
    raw = tiny_run_config(tiny_store, max_steps=4, eval_every=0)
    raw["data"]["seq_len"] = 64
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    run = tmp_path / "meco"
    sets = ["meco.enabled=true", "meco.max_prefix_tokens=24", "meco.cooldown_fraction=0.5"]
    assert main(["train", "--config", str(recipe), "--set", *sets, "--out", str(run)]) == 0
    assert (run / "checkpoint_condition_end.pt").is_file()
    capsys.readouterr()
    args = ["eval", str(run), "--mode", "uncond", "cond_true", "cond_fixed"]
    assert main([*args, "--prefix", r"URL: prose.example.org\n\n"]) == 0
    out = capsys.readouterr().out
    assert "uncond" in out and "cond_true" in out and "cond_fixed" in out
    assert "cond_true - uncond:" in out and "'URL: prose.example.org\\n\\n'" in out
    assert json.loads((run / "eval_modes.json").read_text())["modes"]["cond_fixed"]
    assert main(["eval", str(run), "--prefix", "x"]) == 2  # --prefix needs --mode cond_fixed
    assert "--mode cond_fixed" in capsys.readouterr().err


def test_compare_dry_run_shows_a_branched_plan(tmp_path, capsys):
    suite = str(Path(__file__).parents[1] / "configs" / "suites" / "branched.yaml")
    rc = main(
        [
            *["compare", suite, "--out", str(tmp_path / "b")],
            *["--set", "data.store=shards", "--seeds", "0", "--methods", "uniform", "acodm"],
            *["--branch-at", "60", "--dry-run"],
        ]
    )
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    trunk = f"-> {tmp_path / 'b' / '_shared' / 'seed0' / 'trunk'}"
    assert lines[0].startswith("uniform seed 0 [stage trunk: train] (shared): llama-1m, mixing")
    assert lines[0].endswith(f"60 steps x 16 x 128 tokens {trunk}") and lines[2].endswith(trunk)
    assert lines[3].startswith("acodm seed 0: llama-1m, mixing acodm, steps 61-300 x 16 x 128")
    assert not (tmp_path / "b").exists()
    assert main(["compare", suite, "--out", "x", "--branch-at", "2.5"])
    assert "--branch-at: at 2.5: give a step >= 1 or a fraction" in capsys.readouterr().err
