"""mixlab.report.headroom: drops per doubling, the optimum w* ∝ d (with floors), its predicted
gain, the seeds a comparison needs to see it, and the report note."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from mixlab.errors import DataError
from mixlab.report.headroom import (
    headroom,
    model_check,
    optimum,
    seeds_needed,
    transfer_residual,
)
from mixlab.report.records import RunRecord
from mixlab.report.stats import t_quantile_975
from mixlab.report.summary import summarize
from tests.report.conftest import DOMS, eval_row, log_linear, train_row

D = (0.2, 0.4, 0.6)
UNIFORM = (1 / 3, 1 / 3, 1 / 3)


def run(
    method: str,
    seed: int,
    losses: dict[int, list[float]],
    weights: Sequence[Sequence[float]] = (UNIFORM,),
) -> RunRecord:
    """An in-memory finished run: eval rows at ``losses``' steps, train rows every 10 steps
    cycling ``weights``."""
    steps = sorted(losses)
    curve = [eval_row(s, losses[s]) for s in steps]
    train = [
        train_row(s, weights[i % len(weights)], seconds=0.1, acodm=False)
        for i, s in enumerate(range(10, steps[-1] + 1, 10))
    ]
    return RunRecord(
        method=method,
        seed=seed,
        run_dir=Path(f"/runs/{method}/seed{seed}"),
        eval_steps=steps,
        eval_curve=curve,
        final_eval=dict(curve[-1]),
        train_log=train,
    )


def test_recovers_the_drops_and_the_optimum() -> None:
    """On log-linear curves the drop over steps 100-200 is d itself (at every seed), w* = d / sum
    d, and the predicted gain is (1/K) sum d_i log2(K w*_i); no other mixture predicts more."""
    h = headroom([run("uniform", s, log_linear((6 + s, 5, 4), D)) for s in (1, 0)])
    assert h.step == 200 and h.seeds == (0, 1) and h.domains == DOMS
    assert h.drop == pytest.approx(D) and h.drop_std == pytest.approx([0, 0, 0], abs=1e-12)
    assert h.optimum == pytest.approx([1 / 6, 1 / 3, 1 / 2])
    expected = (0.2 * math.log2(0.5) + 0.4 * math.log2(1.0) + 0.6 * math.log2(1.5)) / 3
    assert h.predicted_gain() == pytest.approx(expected)
    assert h.gain_pct == pytest.approx(100 * math.expm1(-expected))
    assert h.predicted_gain(h.prior) == pytest.approx(0.0)
    for w in np.random.default_rng(0).dirichlet(np.ones(3), size=200):
        assert h.predicted_gain(w) <= h.predicted_gain() + 1e-12
    assert math.isinf(h.domain_change(np.array([0.0, 0.5, 0.5]))[0])  # starved


def test_no_headroom_when_drops_follow_the_mixture() -> None:
    """A natural (0.5, 0.3, 0.2) arm whose drops are proportional to it is already optimal; an
    interior step (150) is read by interpolation in log2 step."""
    nat = (0.5, 0.3, 0.2)
    h = headroom([run("natural", 0, log_linear((6, 5, 4), nat), (nat,))], step=150)
    assert h.step == 150 and h.prior == pytest.approx(nat) and h.optimum == pytest.approx(nat)
    assert h.predicted_gain() == pytest.approx(0.0, abs=1e-12)


def test_floors_are_kept_and_the_rest_follows_the_drops() -> None:
    """w_i = max(floor_i, d_i / lambda): non-binding floors change nothing, binding ones are
    met exactly, and no feasible mixture scores higher."""
    d = np.array([0.1, 0.2, 0.3, 0.4])
    assert optimum(d) == pytest.approx(d / d.sum())
    assert optimum(d, np.array([0.05, 0, 0, 0])) == pytest.approx(d / d.sum())
    floors = np.array([0.3, 0.3, 0.0, 0.0])
    w = optimum(d, floors)
    assert w == pytest.approx([0.3, 0.3, 0.4 * 3 / 7, 0.4 * 4 / 7]) and w.sum() == pytest.approx(1)
    score = float(d @ np.log(w))
    for x in np.random.default_rng(1).dirichlet(np.ones(4), size=2000):
        if (x >= floors).all():
            assert float(d @ np.log(x)) <= score + 1e-12
    assert optimum(np.array([0.0, 0.0, 0.5]), np.array([0.2, 0.1, 0.0])) == pytest.approx(
        [0.2, 0.1, 0.7]
    )
    with pytest.raises(DataError, match=r"floors sum to 1\.2"):
        optimum(d, np.array([0.6, 0.6, 0, 0]))


def test_keep_hardest_guards_the_highest_loss() -> None:
    """Domain a has the highest loss and the smallest drop: unguarded it gets 1/6 < 1/3; kept,
    it gets its uniform 1/3 and b, c share the rest 2:3."""
    runs = [run("uniform", 0, log_linear((9, 5, 4), D))]
    h = headroom(runs, keep_hardest=1)
    assert h.floors == pytest.approx([1 / 3, 0, 0])
    assert h.optimum == pytest.approx([1 / 3, 2 / 3 * 0.4, 2 / 3 * 0.6])
    assert 0 < h.predicted_gain() < headroom(runs).predicted_gain()


def test_guard_worst_spends_only_the_slack_below_the_worst_domain() -> None:
    """Losses 9, 5, 4 - D log2(step) under uniform: a (the worst at t = 200) keeps 1/3; b may fall
    to 1/3 * 2^(-slack_b / 0.4) before its loss reaches a's, c further; with such slack the floors
    do not bind on b, c and w* is the keep_hardest optimum. With little slack (losses 5.1, 5, 4.9)
    the floors bind, every domain's predicted loss stays at or below the worst one's, and the gain
    is positive but smaller than unguarded."""
    wide = headroom([run("uniform", 0, log_linear((9, 5, 4), D))], guard_worst=True)
    end = np.array([9.0, 5.0, 4.0]) - np.array(D) * np.log2(200)
    slack = end[0] - end
    assert wide.floors == pytest.approx(np.array(UNIFORM) * np.exp2(-slack / np.array(D)))
    assert wide.optimum == pytest.approx([1 / 3, 2 / 3 * 0.4, 2 / 3 * 0.6])
    runs = [run("uniform", 0, log_linear((5.1, 5.0, 4.9), D))]
    free, tight = headroom(runs), headroom(runs, guard_worst=True)
    end = np.array([5.1, 5.0, 4.9]) - np.array(D) * np.log2(200)
    assert (end + free.domain_change()).max() > end.max() + 0.05  # unguarded: a gets worse
    assert (end + tight.domain_change()).max() <= end.max() + 1e-9
    assert (tight.optimum >= tight.floors - 1e-12).all() and tight.optimum[0] == pytest.approx(
        1 / 3
    )
    assert 0 < tight.predicted_gain() < free.predicted_gain()
    flat = headroom([run("uniform", 0, log_linear((6, 5, 4), (0.0, 0.4, 0.6)))], guard_worst=True)
    assert flat.floors[0] == pytest.approx(1 / 3)  # the worst domain keeps its share, drop or not


def test_checked_runs_correct_the_guard_by_what_the_model_missed() -> None:
    """A check run at w_c whose losses are the own-token prediction plus r: the residual is r;
    the hardest domain a, 0.05 nats worse there than its own tokens explain, gets a floor above
    its share, p 2^(0.05 / d_a), and w* keeps it; a domain that did better (c) gets more slack.
    Checks need the guard, and one mixture."""
    p = np.array(UNIFORM)
    base = log_linear((5.1, 5.0, 4.9), D)
    proxy = run("uniform", 0, base)
    w_c = (0.3, 0.3, 0.4)
    r_true = np.array([0.05, 0.0, -0.02])
    shifted = {
        s: list(np.array(x) - np.array(D) * np.log2(np.array(w_c) / p) + r_true)
        for s, x in base.items()
    }
    check = run("check", 0, shifted, (w_c,))
    h = headroom([proxy], guard_worst=True, check=[check])
    assert h.residual == pytest.approx(r_true)
    assert transfer_residual(p, np.array(D), h.loss, [check], h.domains, 200) == pytest.approx(
        r_true
    )
    assert h.floors[0] == pytest.approx(1 / 3 * 2 ** (0.05 / 0.2)) and h.optimum[0] >= h.floors[0]
    plain = headroom([proxy], guard_worst=True)
    assert h.floors[2] < plain.floors[2]  # c did better than the model said: more slack
    assert h.domain_change(p) == pytest.approx(r_true)  # the residual rides on every prediction
    with pytest.raises(DataError, match="set it too"):
        headroom([proxy], check=[check])
    other = run("check", 1, shifted, ((0.2, 0.4, 0.4),))
    with pytest.raises(DataError, match="different mixtures"):
        headroom([proxy], guard_worst=True, check=[check, other])


def test_model_check_pairs_seeds_and_measures_the_scale() -> None:
    """Arm runs at their own mixtures whose changes are exactly 1.5x the model's: the check
    pairs them with the same seed's baseline run (seed 2 has none and is left out), gives the
    per-run predictions and the scale 1.5, and no error after it; a run that leaves a domain
    out, or no pair at all, is refused."""
    p = np.array(UNIFORM)
    bases = {s: log_linear((5.1 + 0.1 * s, 5.0, 4.9), D) for s in (0, 1)}
    h = headroom([run("uniform", s, c) for s, c in bases.items()])
    mixes = {0: (0.2, 0.3, 0.5), 1: (0.4, 0.3, 0.3), 2: (0.3, 0.3, 0.4)}
    arm = []
    for s, w in mixes.items():
        change = -1.5 * np.array(D) * np.log2(np.array(w) / p)
        curve = {t: list(np.array(x) + change) for t, x in bases.get(s, bases[0]).items()}
        arm.append(run("headroom", s, curve, (w,)))
    baseline = [run("uniform", s, c) for s, c in bases.items()]
    mc = model_check(h, baseline, arm)
    assert mc.seeds == (0, 1) and mc.step == 200
    assert mc.mixtures == pytest.approx(np.array([mixes[0], mixes[1]]))
    assert mc.predicted[0] == pytest.approx(-np.array(D) * np.log2(np.array(mixes[0]) / p))
    assert mc.measured == pytest.approx(1.5 * mc.predicted)
    assert mc.scale == pytest.approx(1.5) and mc.rmse(1.5) == pytest.approx(0.0, abs=1e-12)
    assert mc.rmse() == pytest.approx(float(np.sqrt(np.mean((0.5 * mc.predicted) ** 2))))
    starved = run("headroom", 0, bases[0], ((0.5, 0.5, 0.0),))
    with pytest.raises(DataError, match="leaves a domain out"):
        model_check(h, baseline, [starved])
    with pytest.raises(DataError, match="no seed has a finished run of both"):
        model_check(h, baseline, [arm[2]])


def test_runs_that_cannot_give_it_are_refused() -> None:
    moving = run("acodm", 0, log_linear((6, 5, 4), D), ((0.3, 0.3, 0.4), (0.4, 0.3, 0.3)))
    with pytest.raises(DataError, match="mixture changes during the run"):
        headroom([moving])
    late = run("uniform", 0, {s: x for s, x in log_linear((6, 5, 4), D).items() if s >= 150})
    with pytest.raises(DataError, match="no eval of a around step 100"):
        headroom([late])
    with pytest.raises(DataError, match="no domain's loss fell"):
        headroom([run("uniform", 0, log_linear((6, 5, 4), (0, 0, 0)))])
    with pytest.raises(DataError, match=r"never samples \['c'\]"):
        headroom([run("fixed", 0, log_linear((6, 5, 4), D), ((0.5, 0.5, 0.0),))])
    with pytest.raises(DataError, match="no finished run"):
        headroom([])
    bare = RunRecord("uniform", 0, Path("/r"), eval_steps=[10], final_eval={"eval/mean_ppl": 9.0})
    bare.eval_curve = [dict(bare.final_eval)]
    with pytest.raises(DataError, match="no per-domain eval curve"):
        headroom([bare])
    running = run("uniform", 0, log_linear((6, 5, 4), D))  # evals to 200 of 400 steps
    running.config = {"train": {"max_steps": 400}}
    with pytest.raises(DataError, match="evaluated up to step 200 of 400; it is still training"):
        headroom([running])
    running.config = {"train": {"max_steps": 200}}
    assert headroom([running]).step == 200


def test_seeds_needed_grows_with_noise_and_shrinks_with_the_gain() -> None:
    n = seeds_needed(1.0, 4.0)
    assert n is not None and seeds_needed(1.0, 8.0) > n > seeds_needed(2.0, 4.0)  # type: ignore[operator]
    assert t_quantile_975(n - 1) * 4.0 / math.sqrt(n) < 1.0
    assert t_quantile_975(n - 2) * 4.0 / math.sqrt(n - 1) >= 1.0
    assert seeds_needed(0.001, 100.0, max_seeds=50) is None and seeds_needed(1.0, 0.0) == 2


def test_the_report_notes_the_headroom_and_the_seeds_it_needs() -> None:
    """A uniform baseline gets the note (w*, the gain, the seeds the paired noise needs); a
    baseline whose mixture moves does not."""
    uniform = [run("uniform", s, log_linear((6, 5, 4), D)) for s in range(3)]
    other = [run("other", s, log_linear((6 + 0.05 * s, 5, 4), D)) for s in range(3)]
    notes = [n for n in summarize([*uniform, *other], metric="geo_ppl").notes if "headroom" in n]
    assert len(notes) == 1
    h = headroom(uniform)
    assert f"a 0.17, b 0.33, c 0.50) would change geo_ppl by about {h.gain_pct:+.1f}%" in notes[0]
    assert "spread by" in notes[0] and "(median over methods: other, 3 seeds)" in notes[0]
    assert "static arms at other mixtures" not in notes[0]  # other trained at the same mixture
    w = np.array([0.2, 0.3, 0.5])
    change = -np.array(D) * np.log2(3 * w)  # exactly what the model predicts
    fixed = [
        run("fixed", s, {t: list(np.array(x) + change) for t, x in c.items()}, (w,))
        for s, c in enumerate(log_linear((6, 5, 4), D) for _ in range(2))
    ]
    notes = [
        n for n in summarize([*uniform, *other, *fixed], metric="geo_ppl").notes if "headroom" in n
    ]
    pct = 100 * math.expm1(float(change.mean()))
    assert f"mean over seeds): fixed {pct:+.1f}% predicted, {pct:+.1f}% measured" in notes[0]
    moving = [
        run("acodm", s, log_linear((6, 5, 4), D), ((0.3, 0.3, 0.4), UNIFORM)) for s in range(2)
    ]
    summary = summarize([*moving, *uniform], baseline="acodm", metric="geo_ppl")
    assert not any("headroom" in n for n in summary.notes)
