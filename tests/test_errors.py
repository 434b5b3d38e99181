"""The shared unknown-key check of hand-parsed YAML mappings."""

import pytest

from mixlab.errors import ConfigError, reject_unknown_keys


def test_known_keys_pass() -> None:
    reject_unknown_keys({"a": 1, "b": 2}, ("a", "b", "c"), "suite.yaml")


def test_unknown_keys_are_named_with_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        reject_unknown_keys(
            {"zeta": 1, "a": 2, "alpha": 3}, ("b", "a"), "s.yaml: run 'x'", prefix="run."
        )
    assert str(info.value) == "s.yaml: run 'x': unknown key(s) run.alpha, run.zeta; allowed: a, b"
