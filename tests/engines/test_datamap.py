"""The --prefixes file: forms, weight splits, token counts, and errors that name the line."""

from __future__ import annotations

import numpy as np
import pytest

from mixlab.engines.datamap import placeholder_map, read_data_map
from mixlab.errors import ConfigError
from tests.engines.conftest import DOMAINS


def test_forms_and_splits(prefixes):
    data = read_data_map(prefixes, DOMAINS)
    assert data.domains["code"].paths == ("/data/code_text_document",)
    assert data.domains["noise"].split(0.4) == [
        ("/data/noise_a_text_document", 0.2),
        ("/data/noise_b_text_document", 0.2),
    ]
    paths, weights = zip(*data.domains["numbers"].split(0.4), strict=True)
    assert paths == ("/data/numbers_0_text_document", "/data/numbers_1_text_document")
    assert weights == pytest.approx((0.3, 0.1))  # pytest >= 9.2: approx takes no nested tuples
    assert data.domains["numbers"].valid == ("/data/numbers_val_text_document",)
    assert data.domains["prose"].total_tokens == 9000
    assert data.domain_tokens(DOMAINS) is None  # code and noise have no counts
    assert data.domain_tokens(["numbers", "prose"]).tolist() == [4000, 9000]


def test_json_works_too(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"a": "/x/a", "b": {"paths": ["/x/b"], "tokens": [5]}}')
    data = read_data_map(path, ["a", "b"])
    assert data.domains["b"].tokens == (5.0,)


def test_placeholders_are_domain_names():
    data = placeholder_map(DOMAINS)
    assert data.placeholder and data.domains["code"].paths == ("code",)
    assert data.domain_tokens(DOMAINS) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("code: /a\nnoise: /b\nnumbers: /c\n", r"no path for domain\(s\) 'prose'"),
        ("code: /a\nnoise: /b\nnumbers: /c\nprose: {paths: /p, weight: 1}\n", r"p.yaml:4.*weight"),
        (
            "code: /a\nnoise: /b\nnumbers: {paths: [/c, /d], tokens: [1]}\nprose: /p\n",
            r":3.*one per path",
        ),
        ("code: /a\nnoise: []\nnumbers: /c\nprose: /p\n", r":2: domain 'noise'.*non-empty"),
        (
            "code: /a\nnoise: /b\nnumbers: /c\nprose: {paths: /p, tokens: -3}\n",
            "finite numbers >= 0",
        ),
        ("code: /a\n  noise: : /b\n", r"p.yaml:2: invalid YAML"),
        ("- /a\n- /b\n", "expected a mapping"),
        (
            "code: /a\nnoise: /b\nnumbers: /c\nprose: {paths: /p, tokns: 3}\n",
            r"unknown key\(s\) tokns; allowed: paths, test, tokens, tokens_per_sample, valid",
        ),
        (
            "code: /a\nnoise: /b\nnumbers: /c\nprose: {paths: /p, tokens_per_sample: 0}\n",
            "tokens_per_sample must be a number > 0",
        ),
    ],
)
def test_errors_name_file_line_and_fix(tmp_path, text, match):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_data_map(path, DOMAINS)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        read_data_map(tmp_path / "nope.yaml", DOMAINS)


def test_token_counts_give_domain_sizes(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "".join(f"{d}: {{paths: [/{d}0, /{d}1], tokens: [1.0e3, 2.0e3]}}\n" for d in DOMAINS)
    )
    np.testing.assert_allclose(read_data_map(path, DOMAINS).domain_tokens(DOMAINS), 3000.0)
