"""``mixlab export-mix`` on the command line: help, the printed plan, warnings, errors."""

from __future__ import annotations

import argparse

import pytest

from mixlab.cli import main
from mixlab.engines.cli import token_count


def test_help_lists_engines_and_the_objective(capsys):
    with pytest.raises(SystemExit):
        main(["export-mix", "--help"])
    out = capsys.readouterr().out
    for text in ("megatron", "olmo-core", "nanotron", "levanter", "hf-datasets", "mosaic"):
        assert text in out
    assert "tokens_t * ||w_t - stage weights||^2" in out and "--max-epochs" in out


def test_prints_phases_shares_epochs_and_cap_warnings(tmp_path, adaptive_run, capsys):
    code = main(
        [
            "export-mix",
            str(adaptive_run),
            "--engine",
            "nanotron",
            "levanter",
            "--out",
            str(tmp_path / "out"),
            "--phases",
            "3",
            "--budget-tokens",
            "150K",
            "--global-batch-size",
            "4",
            "--max-epochs",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "phases: 3" in out and "phase 3" in out and "trajectory" in out and "achieved" in out
    assert "epochs" in out and "@1.5e+05" in out
    # noise: 18000 tokens; ~0.26 x 150K = ~2.2 epochs; code: 7000 tokens, ~0.25 x 150K > 3.
    assert "WARNING: domain 'code'" in out and "exceeds the cap of 3 epochs" in out
    assert "WARNING: domain 'noise'" not in out
    assert "levanter:" in out and "data_mixture.yaml" in out


def test_user_errors_are_one_line_exit_2(tmp_path, capsys):
    code = main(["export-mix", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "mixlab export-mix: error:" in err and "does not exist" in err


def test_token_counts():
    assert token_count("2T") == 2e12 and token_count("500b") == 5e11
    assert token_count("1.5M") == 1.5e6 and token_count("2e9") == 2e9
    with pytest.raises(argparse.ArgumentTypeError):
        token_count("lots")
