"""scripts/mixture_headroom.py: drops per doubling, the optimum w* ∝ d, its predicted gain."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml

from mixlab.mixing.static import read_weights_file
from mixlab.report.records import load_records
from tests.helpers import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mixture_headroom.py"
DOMS = ("a", "b", "c")


def load_script() -> ModuleType:
    return load_module(SCRIPT, "mixture_headroom")


def write_run(
    folder: Path,
    seed: int,
    losses: dict[int, Sequence[float]],
    weights: Sequence[Sequence[float]] = ((1 / 3, 1 / 3, 1 / 3),),
) -> dict[str, object]:
    """A run folder with eval rows at ``losses``' steps and train rows cycling ``weights``."""
    folder.mkdir(parents=True)
    cfg = {"train": {"seed": seed, "max_steps": max(losses)}, "mixing": {"name": "x"}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows: list[dict[str, float]] = []
    for i, step in enumerate(range(10, max(losses) + 1, 10)):
        w = weights[i % len(weights)]
        rows.append(
            {
                "step": step,
                "train/loss": 3.0,
                **{f"mix/weight/{d}": x for d, x in zip(DOMS, w, strict=True)},
            }
        )
        if step in losses:
            row = {"step": step, "eval/mean_ppl": 1.0}
            for d, loss in zip(DOMS, losses[step], strict=True):
                row[f"eval/{d}/loss"], row[f"eval/{d}/ppl"] = loss, math.exp(loss)
            row["eval/geo_ppl"] = math.exp(float(np.mean(losses[step])))
            rows.append(row)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "method": folder.parent.name,
        "seed": seed,
        "dir": f"{folder.parent.name}/{folder.name}",
    }


def log_linear(
    c: Sequence[float], d: Sequence[float], steps: Sequence[int]
) -> dict[int, list[float]]:
    """L_i(step) = c_i - d_i log2(step): a drop of exactly d_i per doubling."""
    return {s: [ci - di * math.log2(s) for ci, di in zip(c, d, strict=True)] for s in steps}


def write_suite(folder: Path, runs: list[dict[str, object]]) -> Path:
    (folder / "suite.json").write_text(
        json.dumps({"name": "t", "baseline": "uniform", "metric": "geo_ppl", "runs": runs})
    )
    return folder


D = (0.2, 0.4, 0.6)
STEPS = (50, 100, 150, 200)


def test_recovers_the_drops_and_the_optimum(tmp_path: Path) -> None:
    """On log-linear curves the drop over steps 100-200 is d itself (at every seed), w* = d / sum
    d, and the predicted gain is (1/K) sum d_i log2(K w*_i); no other mixture predicts more."""
    runs = [
        write_run(tmp_path / "uniform" / f"seed{s}", s, log_linear((6 + s, 5, 4), D, STEPS))
        for s in (0, 1)
    ]
    script = load_script()
    h = script.headroom(load_records([write_suite(tmp_path, runs)]))
    assert h.step == 200 and h.seeds == (0, 1) and h.domains == DOMS
    assert h.drop == pytest.approx(D) and h.drop_std == pytest.approx([0, 0, 0], abs=1e-12)
    assert h.optimum == pytest.approx([1 / 6, 1 / 3, 1 / 2])
    expected = (0.2 * math.log2(0.5) + 0.4 * math.log2(1.0) + 0.6 * math.log2(1.5)) / 3
    assert h.predicted_gain() == pytest.approx(expected)
    assert h.predicted_gain(h.prior) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    for w in rng.dirichlet(np.ones(3), size=200):
        assert h.predicted_gain(w) <= h.predicted_gain() + 1e-12
    # a domain given nothing is starved: its predicted change is infinite
    assert math.isinf(h.domain_change(np.array([0.0, 0.5, 0.5]))[0])


def test_no_headroom_when_drops_follow_the_mixture(tmp_path: Path) -> None:
    """A natural (0.5, 0.3, 0.2) arm whose drops are proportional to it is already optimal, and
    an interior step (150) is read by interpolation in log2 step."""
    nat = (0.5, 0.3, 0.2)
    run = write_run(
        tmp_path / "natural" / "seed0", 0, log_linear((6, 5, 4), [x for x in nat], STEPS), (nat,)
    )
    h = load_script().headroom(load_records([write_suite(tmp_path, [run])]), step=150)
    assert h.step == 150 and h.prior == pytest.approx(nat) and h.optimum == pytest.approx(nat)
    assert h.predicted_gain() == pytest.approx(0.0, abs=1e-12)


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    script = load_script()
    moving = write_run(
        tmp_path / "a" / "acodm" / "seed0", 0, log_linear((6, 5, 4), D, STEPS),
        ((0.3, 0.3, 0.4), (0.4, 0.3, 0.3)),
    )  # fmt: skip
    with pytest.raises(SystemExit, match="mixture changes during the run"):
        script.headroom(load_records([write_suite(tmp_path / "a", [moving])]))
    late = write_run(tmp_path / "b" / "uniform" / "seed0", 0, log_linear((6, 5, 4), D, (150, 200)))
    with pytest.raises(SystemExit, match="no eval of a around step 100"):
        script.headroom(load_records([write_suite(tmp_path / "b", [late])]))
    flat = write_run(
        tmp_path / "c" / "uniform" / "seed0", 0, log_linear((6, 5, 4), (0, 0, 0), STEPS)
    )
    with pytest.raises(SystemExit, match="no domain's loss fell"):
        script.headroom(load_records([write_suite(tmp_path / "c", [flat])]))


def test_seeds_needed_grows_with_noise_and_shrinks_with_the_gain() -> None:
    needed = load_script().seeds_needed
    n = needed(1.0, 4.0)
    assert n is not None and needed(1.0, 8.0) > n > needed(2.0, 4.0)
    from mixlab.report.stats import t_quantile_975

    assert (
        t_quantile_975(n - 1) * 4.0 / math.sqrt(n)
        < 1.0
        <= t_quantile_975(n - 2) * 4.0 / math.sqrt(n - 1)
    )
    assert needed(0.001, 100.0, max_seeds=50) is None


def test_cli_prints_the_table_and_writes_a_weights_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [
        write_run(tmp_path / arm / f"seed{s}", s, log_linear((6 + off * s, 5, 4), D, STEPS))
        for arm, off in (("uniform", 0.01), ("other", -0.02))
        for s in (0, 1, 2)
    ]
    write_suite(tmp_path, runs)
    out = tmp_path / "w.json"
    argv = ["mixture_headroom.py", str(tmp_path), "--vs", "uniform", "other", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    load_script().main()
    text = capsys.readouterr().out
    assert "drop over steps 100-200" in text and "predicted geo_ppl at w* vs uniform" in text
    assert "paired noise uniform vs other at step 200" in text and "paired seeds" in text
    weights = read_weights_file(out, DOMS)
    assert weights.sum() == pytest.approx(1.0) and weights == pytest.approx(
        [1 / 6, 1 / 3, 1 / 2], abs=1e-5
    )
    monkeypatch.setattr(sys, "argv", ["mixture_headroom.py", str(tmp_path), "--arm", "nope"])
    with pytest.raises(SystemExit, match="no runs of arm 'nope'"):
        load_script().main()


def test_floors_are_kept_and_the_rest_follows_the_drops() -> None:
    """w_i = max(floor_i, d_i / lambda): non-binding floors change nothing, binding ones are
    met exactly, and no feasible mixture scores higher."""
    optimum = load_script().optimum
    d = np.array([0.1, 0.2, 0.3, 0.4])
    assert optimum(d) == pytest.approx(d / d.sum())
    assert optimum(d, np.array([0.05, 0, 0, 0])) == pytest.approx(d / d.sum())
    floors = np.array([0.3, 0.3, 0.0, 0.0])
    w = optimum(d, floors)
    assert w == pytest.approx([0.3, 0.3, 0.4 * 3 / 7, 0.4 * 4 / 7]) and w.sum() == pytest.approx(1)
    rng = np.random.default_rng(1)
    score = float(d @ np.log(w))
    for x in rng.dirichlet(np.ones(4), size=2000):
        if (x >= floors).all():
            assert float(d @ np.log(x)) <= score + 1e-12
    assert optimum(np.array([0.0, 0.0, 0.5]), np.array([0.2, 0.1, 0.0])) == pytest.approx(
        [0.2, 0.1, 0.7]
    )
    with pytest.raises(SystemExit, match=r"floors sum to 1\.2"):
        optimum(d, np.array([0.6, 0.6, 0, 0]))


def test_keep_hardest_guards_the_highest_loss(tmp_path: Path) -> None:
    """Domain a has the highest loss and the smallest drop: unguarded it gets 1/6 < 1/3;
    kept, it gets its uniform 1/3 and b, c share the rest 2:3."""
    run = write_run(tmp_path / "uniform" / "seed0", 0, log_linear((9, 5, 4), D, STEPS))
    records = load_records([write_suite(tmp_path, [run])])
    h = load_script().headroom(records, keep_hardest=1)
    assert h.optimum == pytest.approx([1 / 3, 2 / 3 * 0.4, 2 / 3 * 0.6])
    assert 0 < h.predicted_gain() < load_script().headroom(records).predicted_gain()
