"""The figures are real PNGs, and a figure without data is left out."""

from __future__ import annotations

import json
from pathlib import Path

from mixlab.report import summarize
from mixlab.report.plots import (
    acodm_diagnostics,
    build_figures,
    shares_and_repetition,
    weight_trajectories,
)
from tests.report.conftest import record

PNG = b"\x89PNG\r\n\x1a\n"


def _size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_every_figure_is_a_png(suite_report: dict[str, Path]) -> None:
    figures = json.loads(suite_report["json"].read_text())["figures"]
    assert figures == [
        "figures/validation_curves.png",
        "figures/per_domain_ppl.png",
        "figures/weight_trajectories.png",
        "figures/shares_and_repetition.png",
        "figures/acodm_diagnostics.png",  # the fake acodm runs log critic/actor/Q/reward
    ]
    for name in figures:
        png = (suite_report["json"].parent / name).read_bytes()
        assert png.startswith(PNG)
        width, height = _size(png)
        assert 200 < width < 3000 and 150 < height < 2000


def test_runs_without_train_logs_give_no_weight_or_acodm_figure() -> None:
    runs = [record("uniform", 0, {10: 5.0, 20: 4.0}), record("odm", 0, {10: 4.0, 20: 3.0})]
    assert weight_trajectories(runs) is None
    assert shares_and_repetition(runs) is None
    assert acodm_diagnostics(runs) is None
    figures = build_figures(runs, summarize(runs))
    assert [f.name for f in figures] == ["validation_curves"]  # no domains: no per-domain
    assert figures[0].png.startswith(PNG) and figures[0].title and figures[0].caption
