"""The figures are real PNGs, and a figure without data is left out."""

from __future__ import annotations

import pytest

from mixlab.report import load_records, summarize
from mixlab.report.plots import (
    acodm_diagnostics,
    build_figures,
    shares_and_repetition,
    weight_trajectories,
)
from tests.report.conftest import make_fake_suite, record

PNG = b"\x89PNG\r\n\x1a\n"


def _size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@pytest.fixture(scope="module")
def suite_figures(tmp_path_factory: pytest.TempPathFactory):
    folder = make_fake_suite(tmp_path_factory.mktemp("plots") / "suite")
    records = load_records([folder])
    return records, build_figures(records, summarize(records))


def test_every_figure_is_a_png(suite_figures) -> None:
    _, figures = suite_figures
    names = [f.name for f in figures]
    assert names == [
        "validation_curves",
        "per_domain_ppl",
        "weight_trajectories",
        "shares_and_repetition",
        "acodm_diagnostics",
    ]
    for fig in figures:
        assert fig.png.startswith(PNG) and fig.title and fig.caption
        width, height = _size(fig.png)
        assert 200 < width < 3000 and 150 < height < 2000


def test_runs_without_train_logs_give_no_weight_or_acodm_figure() -> None:
    runs = [record("uniform", 0, {10: 5.0, 20: 4.0}), record("odm", 0, {10: 4.0, 20: 3.0})]
    assert weight_trajectories(runs) is None
    assert shares_and_repetition(runs) is None
    assert acodm_diagnostics(runs) is None
    names = [f.name for f in build_figures(runs, summarize(runs))]
    assert names == ["validation_curves"]  # no domains -> no per-domain figure either


def test_acodm_figure_only_for_runs_that_logged_diagnostics(suite_figures) -> None:
    records, _ = suite_figures
    assert acodm_diagnostics([r for r in records if r.method != "acodm"]) is None
    png = acodm_diagnostics(records)
    assert png is not None and png.startswith(PNG)
