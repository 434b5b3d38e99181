"""Static policies: uniform, natural, temperature, fixed (YAML mapping or JSON file)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mixlab.errors import ConfigError
from mixlab.mixing.base import Feedback, PolicyContext
from mixlab.mixing.static import StaticPolicy, mapping_to_weights, temperature_weights
from tests.helpers import build

DOMAINS = ("code", "news", "web")
CTX = PolicyContext(DOMAINS, np.array([500, 300, 200]), seed=1, total_steps=10)


def feedback(step: int) -> Feedback:
    return Feedback(
        step=step,
        total_steps=10,
        loss_sum=np.array([9.0, 1.0, 5.0]),
        token_count=np.array([3, 1, 0]),
        microbatch_count=np.array([1, 1, 0]),
    )


def test_uniform_and_natural() -> None:
    np.testing.assert_allclose(build("uniform", CTX).weights(), [1 / 3] * 3)
    np.testing.assert_allclose(build("natural", CTX).weights(), [0.5, 0.3, 0.2])


def test_temperature_by_hand_and_limits() -> None:
    s = np.sqrt([0.5, 0.3, 0.2])
    got = build("temperature", CTX, temperature=2.0).weights()
    np.testing.assert_allclose(got, s / s.sum(), rtol=1e-12)
    np.testing.assert_allclose(build("temperature", CTX).weights(), [0.5, 0.3, 0.2], rtol=1e-12)
    np.testing.assert_allclose(temperature_weights(CTX.natural_weights, 1e9), [1 / 3] * 3)
    np.testing.assert_allclose(temperature_weights(CTX.natural_weights, float("inf")), [1 / 3] * 3)
    sharp = temperature_weights(CTX.natural_weights, 0.01)  # 0.6^100 would underflow naively
    assert sharp[0] == 1.0 and sharp[1] == pytest.approx(0.6**100, rel=1e-9) and sharp[1] > 0
    assert temperature_weights(np.array([0.0, 0.25, 0.75]), 50.0)[0] == 0.0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "hot"])
def test_temperature_must_be_positive(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"mixing.temperature: (must be a number > 0|expected)"):
        build("temperature", CTX, temperature=bad)


def test_fixed_from_yaml_mapping() -> None:
    w = build("fixed", CTX, weights={"web": 0.6, "code": 0.1, "news": 0.3})
    np.testing.assert_allclose(w.weights(), [0.1, 0.3, 0.6])


@pytest.mark.parametrize("nested", [False, True])
def test_fixed_from_json_file(tmp_path: Path, nested: bool) -> None:
    mapping = {"code": 0.25, "news": 0.25, "web": 0.5}
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"weights": mapping, "round": 1} if nested else mapping))
    policy = build("fixed", CTX, weights=None, weights_file=str(path))
    np.testing.assert_allclose(policy.weights(), [0.25, 0.25, 0.5])


@pytest.mark.parametrize(
    ("weights", "pattern"),
    [
        (
            {"code": -0.1, "news": 0.6, "web": 0.5},
            r"mixing.weights: weight of domain 'code' is neg",
        ),
        ({"code": 0.5, "news": float("nan"), "web": 0.5}, r"domain 'news' is nan"),
        ({"code": 0.5, "news": 0.3, "web": 0.1}, r"mixing.weights: weights sum to 0.9, not 1"),
        ({"code": 0.5, "news": 0.5}, r"no weight for domain\(s\) 'web'"),
        ({"code": 0.5, "news": 0.5, "web": 0, "wiki": 0}, r"unknown domain\(s\) 'wiki'"),
        ({"code": "x", "news": 0.5, "web": 0.5}, r"domain 'code' is 'x', not a number"),
        ([0.5, 0.5, 0.0], r"mixing.weights: expected a mapping"),
    ],
)
def test_fixed_rejects_bad_weights_without_renormalising(weights: object, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        build("fixed", CTX, weights=weights)


def test_fixed_file_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match=re.escape(str(missing)) + r": file not found"):
        build("fixed", CTX, weights_file=str(missing))
    broken = tmp_path / "broken.json"
    broken.write_text('{"code": 0.5,\n "news": }')
    with pytest.raises(ConfigError, match=re.escape(str(broken)) + r": invalid JSON at line 2"):
        build("fixed", CTX, weights_file=str(broken))
    listed = tmp_path / "list.json"
    listed.write_text("[0.5, 0.5, 0.0]")
    with pytest.raises(
        ConfigError, match=re.escape(str(listed)) + r": expected a JSON object.*got list"
    ):
        build("fixed", CTX, weights_file=str(listed))
    bad_sum = tmp_path / "sum.json"
    bad_sum.write_text(json.dumps({"code": 1, "news": 1, "web": 1}))
    with pytest.raises(ConfigError, match=re.escape(str(bad_sum)) + r": weights sum to 3"):
        build("fixed", CTX, weights_file=str(bad_sum))
    with pytest.raises(ConfigError, match=r"cannot be read \(.*Is a directory"):
        build("fixed", CTX, weights_file=str(tmp_path))


def test_fixed_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs mixing\.weights .* or mixing\.weights_file"):
        build("fixed", CTX, weights=None, weights_file=None)
    with pytest.raises(ConfigError, match="both set"):
        build("fixed", CTX, weights={"code": 1.0}, weights_file=str(tmp_path / "w"))


def test_normalise_is_explicit_opt_in() -> None:
    raw = {"code": 2.0, "news": 1.0, "web": 1.0}
    with pytest.raises(ConfigError, match="sum to 4"):
        mapping_to_weights(raw, DOMAINS)
    np.testing.assert_allclose(mapping_to_weights(raw, DOMAINS, normalise=True), [0.5, 0.25, 0.25])
    with pytest.raises(ConfigError, match="'news' is negative"):
        mapping_to_weights({"code": 2.0, "news": -1.0, "web": 1.0}, DOMAINS, normalise=True)


@pytest.mark.parametrize("name", ["uniform", "natural", "temperature", "fixed"])
def test_static_policies_ignore_feedback_and_round_trip(name: str) -> None:
    options = {
        "temperature": {"temperature": 3.0},
        "fixed": {"weights": {"code": 0.2, "news": 0.2, "web": 0.6}},
    }.get(name, {})
    policy = build(name, CTX, **options)
    before = policy.weights()
    for t in range(1, 6):
        policy.update(feedback(t))
    np.testing.assert_array_equal(policy.weights(), before)
    assert policy.log_values() == {}
    state = json.loads(json.dumps(policy.state_dict()))
    fresh = StaticPolicy(DOMAINS, np.array([1.0, 0.0, 0.0]))
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.weights(), before)
    with pytest.raises(ConfigError, match="unknown domain"):
        fresh.load_state_dict({"weights": {"code": 1.0, "news": 0.0, "wiki": 0.0}})
