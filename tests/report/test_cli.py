"""``mixlab report``: the parser the lead wires into ``mixlab``, output and default folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mixlab.errors import DataError
from mixlab.report.cli import add_parser, default_out
from tests.report.conftest import curve, write_run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixlab")
    add_parser(parser.add_subparsers(dest="command"))
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return int(args.func(args))


def test_report_command_prints_the_table_and_the_files(
    fake_suite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite_json = fake_suite / "suite.json"
    suite = json.loads(suite_json.read_text())
    suite_json.write_text(json.dumps({**suite, "metric": "natural_ppl"}))
    assert _run(["report", str(fake_suite), "--title", "T"]) == 0  # the suite's metric
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("method")
    assert "natural_ppl (95% CI)" in out
    for name in ("report.html", "report.md", "results.json"):
        assert f"wrote {fake_suite / 'report' / name}" in out
        assert (fake_suite / "report" / name).is_file()


def test_run_folders_default_out_and_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path / "runs" / "uniform", seed=0, evals=curve((1.0, 1.0, 1.0)))
    b = write_run(tmp_path / "runs" / "odm", seed=0, evals=curve((0.9, 1.0, 1.0)))
    assert default_out(a) == tmp_path / "runs" / "report"
    out = tmp_path / "elsewhere"
    assert _run(["report", str(b), str(a), "--baseline", "uniform", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote " + str(out / "report.html") in text
    assert text.splitlines()[2].startswith("uniform")  # the baseline row comes first


def test_help_explains_the_report() -> None:
    text = _parser()._subparsers._group_actions[0].choices["report"].format_help()  # type: ignore[union-attr]
    for phrase in ("steps", "natural_ppl", "report.html", "results.json", "suite.json"):
        assert phrase in text


def test_bad_path_is_a_mixlab_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        _run(["report", str(tmp_path / "missing")])
