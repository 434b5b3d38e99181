"""mixing.name: headroom: a static mixture w* ∝ each domain's loss drop per doubling, read from
finished static-mixture runs (run or suite folders), with floors; errors name the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mixlab.errors import ConfigError, DataError
from mixlab.mixing.base import PolicyContext
from mixlab.mixing.static import StaticPolicy
from tests.helpers import build, train_tiny_run
from tests.report.conftest import log_linear, suite_of, write_run

D = (0.2, 0.4, 0.6)
CTX = PolicyContext(("c", "a", "b"), np.array([100, 100, 100]), 0, 200)  # another order


def proxy(folder: Path, seed: int = 0, d: tuple[float, ...] = D) -> Path:
    return write_run(folder, seed=seed, evals=log_linear((6, 5, 4), d))


def weights(policy: StaticPolicy) -> dict[str, float]:
    return dict(zip(policy.domains, policy.weights().tolist(), strict=True))


def test_w_star_from_a_run_folder(tmp_path: Path) -> None:
    """w* = d / sum d, mapped onto this store's domain order; a state round trip keeps it."""
    policy = build("headroom", CTX, headroom={"runs": [str(proxy(tmp_path / "uniform"))]})
    assert isinstance(policy, StaticPolicy) and policy.name == "headroom"
    assert weights(policy) == pytest.approx({"a": 1 / 6, "b": 1 / 3, "c": 1 / 2})
    one = build("headroom", CTX, headroom={"runs": str(tmp_path / "uniform")})  # one folder
    np.testing.assert_array_equal(one.weights(), policy.weights())
    other = build("headroom", CTX, headroom={"runs": [str(proxy(tmp_path / "x", d=(1, 1, 1)))]})
    other.load_state_dict(policy.state_dict())  # a resumed run keeps its checkpoint's weights
    np.testing.assert_array_equal(other.weights(), policy.weights())


def test_floors_and_the_arm_of_a_suite(tmp_path: Path) -> None:
    """keep_hardest keeps the highest-loss domain (a) at its share; min_weight floors all; in a
    suite folder ``arm`` picks the static arm (default uniform when there are several)."""
    curves = {"uniform": D, "other": (0.5, 0.25, 0.25)}
    suite = suite_of(
        tmp_path / "suite", {a: [log_linear((6, 5, 4), d)] * 2 for a, d in curves.items()}
    )
    kept = build("headroom", CTX, headroom={"runs": [str(suite)], "keep_hardest": 1})
    assert weights(kept) == pytest.approx({"a": 1 / 3, "b": 2 / 3 * 0.4, "c": 2 / 3 * 0.6})
    floored = build("headroom", CTX, headroom={"runs": [str(suite)], "min_weight": 0.25})
    assert weights(floored) == pytest.approx({"a": 0.25, "b": 0.75 * 0.4, "c": 0.75 * 0.6})
    other = build("headroom", CTX, headroom={"runs": [str(suite)], "arm": "other"})
    assert weights(other) == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})


def test_guard_worst_is_the_report_estimate_with_its_floors(tmp_path: Path) -> None:
    """guard_worst: the weights are report.headroom's guarded w* (close losses: the floors
    bind), not the free one; the worst domain (a) keeps its share."""
    from mixlab.report.headroom import headroom
    from mixlab.report.records import load_run

    run = write_run(tmp_path / "u", seed=0, evals=log_linear((5.1, 5.0, 4.9), D))
    guarded = weights(build("headroom", CTX, headroom={"runs": [str(run)], "guard_worst": True}))
    expected = headroom([load_run(run)], guard_worst=True)
    assert guarded == pytest.approx(dict(zip(expected.domains, expected.optimum, strict=True)))
    assert guarded["a"] == pytest.approx(1 / 3)
    assert guarded != pytest.approx(weights(build("headroom", CTX, headroom={"runs": [str(run)]})))


def test_check_runs_go_with_the_guard(tmp_path: Path) -> None:
    """check_runs without guard_worst is refused when the config is read; with it the weights
    are report.headroom's corrected estimate, and a bad check names check_runs."""
    from mixlab.report.headroom import headroom
    from mixlab.report.records import load_run

    run = write_run(tmp_path / "u", seed=0, evals=log_linear((5.1, 5.0, 4.9), D))
    worse = {s: [x + 0.05, y, z] for s, (x, y, z) in log_linear((5.1, 5.0, 4.9), D).items()}
    check = write_run(tmp_path / "check", seed=0, evals=worse)  # at uniform, a 0.05 worse
    with pytest.raises(ConfigError, match="guard_worst"):
        build("headroom", CTX, headroom={"runs": [str(run)], "check_runs": [str(check)]})
    opts = {"runs": [str(run)], "guard_worst": True, "check_runs": str(check)}
    checked = weights(build("headroom", CTX, headroom=opts))
    expected = headroom([load_run(run)], guard_worst=True, check=[load_run(check)])
    assert checked == pytest.approx(dict(zip(expected.domains, expected.optimum, strict=True)))
    assert checked["a"] > 1 / 3  # a lost 0.05 beyond its own tokens: kept above its share
    with pytest.raises(DataError, match=r"check_runs .*not a folder"):
        build("headroom", CTX, headroom={**opts, "check_runs": [str(tmp_path / "nope")]})


def test_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mixing\.headroom\.runs"):
        build("headroom", CTX)
    with pytest.raises(DataError, match=r"mixing\.headroom\.runs .*not a folder"):
        build("headroom", CTX, headroom={"runs": [str(tmp_path / "missing")]})
    moving = write_run(
        tmp_path / "odm", seed=0, evals=log_linear((6, 5, 4), D), weights=(0.5, 0.3, 0.2)
    )
    moving_rows = (moving / "metrics.jsonl").read_text().splitlines()
    (moving / "metrics.jsonl").write_text(
        "\n".join(
            r.replace('"mix/weight/a": 0.5', '"mix/weight/a": 0.4', 1) if i == 0 else r
            for i, r in enumerate(moving_rows)
        )
        + "\n"
    )
    with pytest.raises(DataError, match="mixture changes during the run"):
        build("headroom", CTX, headroom={"runs": [str(moving)]})
    two = PolicyContext(("a", "z"), np.array([10, 10]), 0, 200)
    with pytest.raises(ConfigError, match="not this store's"):
        build("headroom", two, headroom={"runs": [str(proxy(tmp_path / "u"))]})
    with pytest.raises(ConfigError, match="min_weight"):
        build("headroom", CTX, headroom={"runs": [str(tmp_path / "u")], "min_weight": 0.4})
    with pytest.raises(DataError, match="no runs of arm 'nope'"):
        build("headroom", CTX, headroom={"runs": [str(tmp_path / "u")], "arm": "nope"})


def test_end_to_end_from_a_trained_proxy(tiny_store: Path, tmp_path: Path) -> None:
    """A real uniform proxy run, then a run at its w*: the train log shows w* at every step."""
    uniform = train_tiny_run(tiny_store, tmp_path / "uniform", mixing={"name": "uniform"})
    target = train_tiny_run(
        tiny_store,
        tmp_path / "target",
        mixing={"name": "headroom", "headroom": {"runs": [str(uniform)]}},
    )
    from mixlab.report.headroom import headroom
    from mixlab.report.records import load_run

    expected = headroom([load_run(uniform)])
    prefix = "mix/weight/"
    rows = load_run(target).train_log
    assert len(rows) == 6  # log_every 2, 12 steps
    for row in rows:
        logged = {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
        assert logged == pytest.approx(dict(zip(expected.domains, expected.optimum, strict=True)))
    assert expected.optimum.min() > 0 and np.ptp(expected.optimum) > 0.01  # not uniform again
