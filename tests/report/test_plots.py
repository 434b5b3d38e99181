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


def test_acodm_alarm_notes() -> None:
    """A run that left its bound, or served a domain past its epoch cap, gets an ALARM note."""
    from mixlab.report.summary import acodm_alarms

    def rows(excess: float, cap_use: float) -> list[dict[str, float]]:
        return [
            {"step": s, "mix/acodm/bound": 1.0, "mix/acodm/bound_excess": excess * (s > 10),
             "mix/acodm/max_cap_use": cap_use * s / 20}
            for s in (10, 20)
        ]  # fmt: skip

    fine = record("acodm", 0, {20: 4.0}, train_log=rows(0.0, 0.9))
    out = record("acodm", 1, {20: 4.0}, train_log=rows(0.25, 1.5))
    assert acodm_alarms([fine]) == []
    notes = acodm_alarms([fine, out])
    assert len(notes) == 2 and all(n.startswith("ALARM acodm seed 1") for n in notes)
    assert "1.25 > bound 1" in notes[0] and "from step 20" in notes[1]
    assert acodm_diagnostics([fine, out]) is not None
    assert any(n.startswith("ALARM") for n in summarize([fine, out]).notes)
