"""report.html is self-contained and renders in a real headless browser; report.md and
results.json are written next to it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def report(suite_report: dict[str, Path]) -> dict[str, Path]:
    return suite_report


def test_html_is_self_contained(report: dict[str, Path]) -> None:
    page = report["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert 'src="file' not in page and "<link" not in page
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "Test &lt;suite&gt;" in page  # the title is escaped
    for text in ("natural_ppl", "worst_ppl (domain)", "Per-domain validation perplexity"):
        assert text in page
    assert "skipped odm seed 0" in page


def test_markdown_references_the_written_figures(report: dict[str, Path]) -> None:
    md = report["markdown"].read_text(encoding="utf-8")
    assert md.startswith("# Test <suite>")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 5
    for link in links:
        assert link.startswith("figures/")
        assert (report["markdown"].parent / link).read_bytes().startswith(b"\x89PNG")
    assert "| uniform | 2 |" in md


def test_results_json_is_strict_json_with_runs(report: dict[str, Path]) -> None:
    text = report["json"].read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    results = json.loads(text)
    assert results["baseline"] == "uniform" and results["metric"] == "mean_ppl"
    assert [m["method"] for m in results["methods"]] == ["uniform", "natural", "doremi", "acodm"]
    assert len(results["runs"]) == 9 and results["runs"][-1]["status"] == "failed"
    assert len(results["figures"]) == 5
    doremi = results["methods"][2]
    assert doremi["cost"]["stage_tokens"]["mean"] == 4096
    assert doremi["vs_baseline"]["wins"] == 2


def _browser_body(page: Path, tmp_path: Path, chromium: str = CHROMIUM) -> dict[str, str]:
    """Load ``page`` in headless Chromium; the ``data-*`` attributes of its <body>."""
    binary = chromium if Path(chromium).exists() else shutil.which("chromium")
    if binary is None:
        if os.environ.get("MIXLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MIXLAB_REQUIRE_BROWSER=1 but {chromium} is missing")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            "--virtual-time-budget=5000",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    body = re.search(r"<body([^>]*)>", out.stdout)
    assert body is not None, f"no <body> in chromium's output: {out.stderr[-2000:]}"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


@pytest.mark.slow  # CI runs it (MIXLAB_REQUIRE_BROWSER=1): `pytest -m slow`
def test_report_renders_in_a_headless_browser(report: dict[str, Path], tmp_path: Path) -> None:
    n_figures = len(json.loads(report["json"].read_text())["figures"])
    attrs = _browser_body(report["html"], tmp_path)
    assert attrs.get("images-loaded") == str(n_figures) == attrs.get("images-total")
    assert attrs.get("errors") == "0"


@pytest.mark.slow
def test_the_browser_check_sees_a_broken_image(report: dict[str, Path], tmp_path: Path) -> None:
    page = report["html"].read_text(encoding="utf-8")
    broken = page.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    path = tmp_path / "broken.html"
    path.write_text(broken, encoding="utf-8")
    attrs = _browser_body(path, tmp_path)
    assert attrs.get("images-loaded") == "4" and attrs.get("errors") == "1"


def test_missing_browser_skips_unless_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-chromium")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("MIXLAB_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception):
        _browser_body(tmp_path / "x.html", tmp_path, missing)
    monkeypatch.setenv("MIXLAB_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="MIXLAB_REQUIRE_BROWSER=1"):
        _browser_body(tmp_path / "x.html", tmp_path, missing)
