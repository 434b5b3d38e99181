"""The report's search section: from a search folder, and from a suite's search stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixlab.cli import main
from mixlab.report import load_records, write_report
from mixlab.report.search import is_search_folder, load_search_section
from mixlab.search.plan import plan_search
from mixlab.search.run import fit_swarm
from mixlab.search.spec import parse_search_spec
from tests.conftest import tiny_run_config
from tests.report.conftest import make_fake_suite
from tests.search.synthetic import true_law, write_finished_swarm


@pytest.fixture(scope="module")
def search_folder(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished search folder (the swarm's results synthesised from a known law)."""
    spec = {
        "base": tiny_run_config(tiny_store),
        "target": {"max_steps": 48},
        "swarm": {"runs": 8, "max_epochs": 3},
        "fit": {"bootstrap": 5},
    }
    plan = plan_search(parse_search_spec(spec))
    out = tmp_path_factory.mktemp("search")
    write_finished_swarm(plan, out, true_law(len(plan.domains), seed=3))
    fit_swarm(plan, out)
    return out


def test_search_folder_report(search_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert is_search_folder(search_folder) and not is_search_folder(search_folder / "swarm")
    assert main(["report", str(search_folder)]) == 0
    printed = capsys.readouterr().out
    assert "Fit diagnostics (held-out)" in printed and "epochs chosen" in printed
    html = (search_folder / "report" / "report.html").read_text()
    for text in ("Swarm: predicted vs measured loss", "Compute", "Swarm runs", "0-prior"):
        assert text in html
    assert html.count("data:image/png;base64,") == 2
    md = (search_folder / "report" / "report.md").read_text()
    assert "figures/search-scatter.png" in md
    assert (search_folder / "report" / "figures" / "search-mixture.png").is_file()


def test_search_and_run_folders_are_not_mixed(search_folder: Path, tmp_path: Path) -> None:
    suite = make_fake_suite(tmp_path / "suite")
    assert main(["report", str(search_folder), str(suite)]) == 2


def test_suite_with_a_search_stage_gets_a_section(search_folder: Path, tmp_path: Path) -> None:
    suite = make_fake_suite(tmp_path / "suite")
    manifest = json.loads((suite / "suite.json").read_text())
    manifest["runs"][0]["stages"] = [
        {"name": "swarm", "kind": "search", "dir": str(search_folder), "tokens": 10}
    ]
    (suite / "suite.json").write_text(json.dumps(manifest))
    records = load_records([suite])
    assert records[0].stages[0].dir == search_folder
    paths = write_report(records, tmp_path / "report")
    html = paths["html"].read_text()
    assert "Mixture search: uniform seed 0 (stage swarm)" in html
    assert (paths["figures"] / "search-s1-scatter.png").is_file()
    section = load_search_section(search_folder)
    assert [t[0] for t in section.tables][:2] == ["Fit diagnostics (held-out)", "Mixture"]
