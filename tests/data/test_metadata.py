"""MeCo metadata transforms: host extraction, variants, templates."""

from __future__ import annotations

import pytest

from mixlab.data.metadata import extract_host, metadata_value, render_prefix
from mixlab.errors import ConfigError


@pytest.mark.parametrize(
    ("metadata", "host"),
    [
        ("https://en.wikipedia.org/wiki/X", "en.wikipedia.org"),
        ("http://user@Example.COM:8080/a?b=c", "example.com"),
        ("www.bbc.co.uk/news/1", "www.bbc.co.uk"),
        ("stdlib/json/decoder.py", "stdlib/json"),
        ("license/numpy-1.26.dist-info/LICENSE.txt", "license/numpy-1.26.dist-info"),
        ("README.md", "README.md"),
        ("   ", ""),
    ],
)
def test_extract_host(metadata, host):
    assert extract_host(metadata) == host


def test_variants():
    url = "https://en.wikipedia.org/wiki/X"
    assert metadata_value(url, "host") == "en.wikipedia.org"
    assert metadata_value(url, "registered_domain") == "wikipedia.org"
    assert metadata_value("https://news.bbc.co.uk/x", "registered_domain") == "bbc.co.uk"
    assert metadata_value(url, "suffix") == "org"
    assert metadata_value(url, "full_url") == url
    assert metadata_value(url, "fixed", fixed_value="quiz.example") == "quiz.example"
    hashed = metadata_value(url, "hashed")
    assert hashed.startswith("site-") and len(hashed) == 13
    assert hashed == metadata_value("http://en.wikipedia.org/other", "hashed")  # same host
    assert hashed != metadata_value("https://de.wikipedia.org/", "hashed")
    assert metadata_value("", "fixed") == ""  # no metadata -> no prefix, whatever the variant


def test_render_prefix_and_errors():
    assert render_prefix("https://en.wikipedia.org/wiki/X") == "URL: en.wikipedia.org\n\n"
    assert render_prefix("math", variant="field", template="Topic: {value}\n") == "Topic: math\n"
    assert render_prefix("") is None
    with pytest.raises(ConfigError, match=r"meco\.metadata_variant"):
        metadata_value("x", "nope")
    with pytest.raises(ConfigError, match=r"meco\.metadata_template"):
        render_prefix("https://a.org", template="URL: {url}")
