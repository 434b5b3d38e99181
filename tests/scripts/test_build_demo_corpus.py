"""scripts/build_demo_corpus.py: the developer script that regenerates the shipped demo corpus.

Its machine scan is not run here (its output depends on the installed packages); its rules are
tested on files written by the tests, and its output is read back through the library.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest

from mixlab.data import demo_corpus as dc
from tests.helpers import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_demo_corpus.py"


def load_script() -> ModuleType:
    return load_module(SCRIPT, "build_demo_corpus")


bdc = load_script()


def fake_domains(**sizes: int) -> dict[str, tuple[str, object]]:
    """Domains of 1000-byte synthetic documents, ``name=total bytes``."""

    def fake(n_bytes: int, name: str) -> tuple[str, object]:
        texts = [f"{name} {i} ".ljust(1000, "w") for i in range(n_bytes // 1000)]
        docs = [
            bdc._Candidate(f"stdlib/{name}/{i}.py", partial(str, t)) for i, t in enumerate(texts)
        ]
        return (f"synthetic {name}", lambda: docs)

    return {name: fake(n, name) for name, n in sizes.items()}


def test_script_builds_the_domains_the_library_ships() -> None:
    assert tuple(bdc._DOMAINS) == dc.DEMO_DOMAINS


def test_files_skip_bad_utf8_tiny_and_duplicate_documents(tmp_path: Path) -> None:
    body = "line of text\n" * 40
    (tmp_path / "a.txt").write_text(body, encoding="utf-8")
    (tmp_path / "b.txt").write_text(body, encoding="utf-8")  # duplicate of a
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe not utf-8 " * 50)
    (tmp_path / "d.txt").write_text("tiny", encoding="utf-8")
    (tmp_path / "e.txt").write_text("other text\r\n" * 60, encoding="utf-8")
    candidates = bdc._files("demo", tmp_path, (".txt",))
    assert [c.source for c in candidates] == [f"demo/{n}.txt" for n in "abcde"]
    records, size = bdc._fill_domain("x", candidates, 10_000)
    texts = sorted(r["text"] for r in records)
    assert texts == sorted([body.strip(), ("other text\n" * 60).strip()])
    assert size == sum(len(t.encode()) for t in texts)


def test_domain_cap_and_document_clipping(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i:02d}.txt").write_text(f"{i} é\n" * 3000, encoding="utf-8")
    candidates = bdc._files("demo", tmp_path, (".txt",))
    records, size = bdc._fill_domain("x", candidates, 40_000)
    assert size <= 40_000 and 40_000 - size < bdc.MIN_DOC_BYTES + 10
    assert all(r["text"].endswith("é") for r in records)  # cut at a line boundary
    # Documents longer than the remaining budget but clipped to MAX_DOC_BYTES do not end the
    # domain early: 3 x 200 KB files fill a 150 KB cap as 64 KB + 64 KB + the rest.
    for i in range(3):
        (tmp_path / f"g{i}.big").write_text(f"{i} line\n" * 25_000, encoding="utf-8")
    records, size = bdc._fill_domain("x", bdc._files("demo", tmp_path, (".big",)), 150_000)
    assert len(records) == 3 and 150_000 - bdc.MIN_DOC_BYTES < size <= 150_000
    text = "ab\n" * 10 + "é" * 100
    assert bdc._clip(text, 31) == "ab\n" * 9 + "ab"
    assert bdc._clip("é" * 100, 11) == "é" * 5  # no line break: whole characters only


def test_docstrings_extracted_in_source_order(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        '"""Module doc."""\n\nclass A:\n    """Class doc."""\n\n    def f(self):\n'
        '        """Method doc."""\n\nif True:\n    def g():\n        """Guarded doc."""\n',
        encoding="utf-8",
    )
    assert bdc._docstrings(module) == "Module doc.\n\nClass doc.\n\nMethod doc.\n\nGuarded doc."
    (tmp_path / "bad.py").write_text("def (:\n", encoding="utf-8")
    assert bdc._docstrings(tmp_path / "bad.py") is None


def test_a_short_domain_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bdc, "_DOMAINS", fake_domains(big=20_000, small=2_000))
    with pytest.raises(SystemExit, match="domain small: only 2000 bytes"):
        bdc.collect_corpus(10_000)


def test_copyleft_sources_are_refused_outside_the_licenses_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = {"text": "x", "domain": "api_docs", "source": "site-packages/gplpkg/a.py"}
    monkeypatch.setattr(bdc, "_distribution_of", lambda source, _: ("gplpkg", "1.0", "GPL-3.0"))
    with pytest.raises(SystemExit, match=r"gplpkg is licensed GPL-3\.0"):
        bdc.attribution({"api_docs": [record]})
    text = bdc.attribution({"licenses": [{**record, "domain": "licenses"}]})
    assert "| gplpkg | 1.0 | GPL-3.0 | licenses 1 |" in text


def test_written_corpus_unpacks_through_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bdc, "_DOMAINS", fake_domains(one=20_000, two=20_000, three=20_000))
    corpus = bdc.collect_corpus(10_000)
    shipped = tmp_path / "shipped"
    written = bdc.write_corpus(shipped, corpus, 10_000, bdc.attribution(corpus))
    assert sorted(p.name for p in shipped.iterdir()) == sorted(
        ["ATTRIBUTION.md", "manifest.json", "one.jsonl.zst", "three.jsonl.zst", "two.jsonl.zst"]
    )
    assert "| CPython |" in (shipped / "ATTRIBUTION.md").read_text(encoding="utf-8")
    again = bdc.write_corpus(tmp_path / "again", corpus, 10_000, "")
    assert again["fingerprint"] == written["fingerprint"]  # same documents, same fingerprint

    monkeypatch.setattr(dc, "_shipped_dir", lambda: shipped)
    out = dc.build_demo_corpus(tmp_path / "out")
    assert json.loads((out / dc.MANIFEST_NAME).read_text(encoding="utf-8")) == written
    assert list(written["domains"]) == ["one", "two", "three"]
    for name, records in corpus.items():
        lines = (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == records
        assert (
            written["domains"][name]["docs"] == 10 and written["domains"][name]["bytes"] == 10_000
        )
    assert dc.describe_demo_corpus(out).endswith(written["fingerprint"])
