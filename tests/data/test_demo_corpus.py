"""The demo corpus: built from this machine's Python installation, deterministic, cached."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
from functools import partial
from pathlib import Path

import pytest
from tqdm import tqdm

from mixlab.data import demo_corpus as dc
from mixlab.errors import ConfigError, DataError

CAP = 100_000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dc.build_demo_corpus(
        tmp_path_factory.mktemp("demo") / "corpus", max_bytes_per_domain=CAP, progress=False
    )


def read_domain(corpus: Path, domain: str) -> list[dict]:
    with open(corpus / f"{domain}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def manifest(corpus: Path) -> dict:
    return json.loads((corpus / dc.MANIFEST_NAME).read_text(encoding="utf-8"))


def test_layout_records_and_manifest(corpus: Path) -> None:
    info = manifest(corpus)
    assert info["format_version"] == dc.CORPUS_FORMAT_VERSION
    assert info["max_bytes_per_domain"] == CAP
    domains = list(info["domains"])
    assert len(domains) >= 5
    assert set(domains) <= set(dc.DEMO_DOMAINS)
    assert dc.demo_corpus_files(corpus) == [corpus / f"{d}.jsonl" for d in domains]
    assert sorted(p.name for p in corpus.iterdir()) == sorted(
        [dc.MANIFEST_NAME] + [f"{d}.jsonl" for d in domains]
    )
    home, prefix = str(Path.home()), sys.prefix
    for domain in domains:
        data = (corpus / f"{domain}.jsonl").read_bytes()
        stats = info["domains"][domain]
        assert stats["sha256"] == hashlib.sha256(data).hexdigest()
        records = read_domain(corpus, domain)
        assert len(records) == stats["docs"] > 0
        text_bytes = sum(len(r["text"].encode("utf-8")) for r in records)
        assert text_bytes == stats["bytes"]
        assert min(CAP // 2, dc.MIN_DOMAIN_BYTES) <= text_bytes <= CAP
        for r in records:
            assert set(r) == {"text", "domain", "source"}
            assert r["domain"] == domain
            assert r["text"].strip() and len(r["text"].encode("utf-8")) <= dc.MAX_DOC_BYTES
            src = r["source"]
            assert src and not src.startswith("/") and "\\" not in src and ".." not in src
            assert home not in src and prefix not in src
        assert len({r["source"] for r in records}) == len(records)
        assert len({r["text"] for r in records}) == len(records)  # exact duplicates removed


def test_domains_are_distinct_kinds_of_text(corpus: Path) -> None:
    def share(domain: str, *needles: str, lower: bool = False) -> float:
        records = read_domain(corpus, domain)
        texts = [r["text"].lower() if lower else r["text"] for r in records]
        return sum(any(n in t for n in needles) for t in texts) / len(texts)

    assert share("c_headers", "#include", "#define") >= 0.8
    assert share("python_code", "#include") <= 0.1
    assert share("python_code", "def ", "class ") >= 0.8
    assert share("python_tests", "def test", "assert") >= 0.9
    assert share("licenses", "licen", lower=True) >= 0.8
    assert share("api_docs", "#include") <= 0.1
    assert share("math_docs", ">>>", "integer", "matrix", "polynomial", "x**") >= 0.5
    sources = {
        d: {r["source"].split("/")[0] for r in read_domain(corpus, d)}
        for d in manifest(corpus)["domains"]
    }
    assert sources["licenses"] <= {"license", "stdlib"}
    assert sources["python_code"] == {"stdlib"}


def test_rebuild_is_byte_identical(corpus: Path, tmp_path: Path) -> None:
    again = dc.build_demo_corpus(tmp_path / "again", max_bytes_per_domain=CAP, progress=False)
    names = sorted(p.name for p in corpus.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (corpus / name).read_bytes() == (again / name).read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left over


def test_cache_is_reused_until_cap_changes_or_rebuild(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = Path(shutil.copytree(corpus, tmp_path / "copy"))  # the fixture stays untouched
    before = {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()}
    calls: list[int] = []
    real_write = dc._write_corpus

    def counting_write(tmp: Path, max_bytes: int, environment: str, progress: bool) -> None:
        calls.append(max_bytes)
        real_write(tmp, max_bytes, environment, progress)

    monkeypatch.setattr(dc, "_write_corpus", counting_write)
    assert dc.build_demo_corpus(corpus, max_bytes_per_domain=CAP, progress=False) == corpus
    assert calls == []
    assert {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()} == before
    # A corrupted domain file is not "complete": it is rebuilt.
    victim = corpus / f"{next(iter(manifest(corpus)['domains']))}.jsonl"
    victim.write_bytes(victim.read_bytes()[:-10])
    dc.build_demo_corpus(corpus, max_bytes_per_domain=CAP, progress=False)
    assert calls == [CAP]
    dc.build_demo_corpus(corpus, max_bytes_per_domain=CAP, progress=False, rebuild=True)
    assert calls == [CAP, CAP]
    dc.build_demo_corpus(corpus, max_bytes_per_domain=CAP + 1, progress=False)
    assert calls == [CAP, CAP, CAP + 1]
    assert manifest(corpus)["max_bytes_per_domain"] == CAP + 1


def test_default_location_follows_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "mc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dc.default_cache_dir() == tmp_path / "mc" / "demo_corpus"
    monkeypatch.delenv("MIXLAB_CACHE")
    assert dc.default_cache_dir() == tmp_path / "xdg" / "mixlab" / "demo_corpus"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dc.default_cache_dir() == tmp_path / "home" / ".cache" / "mixlab" / "demo_corpus"


def test_describe_lists_every_domain(corpus: Path) -> None:
    table = dc.describe_demo_corpus(corpus)
    for domain, stats in manifest(corpus)["domains"].items():
        row = next(line for line in table.splitlines() if line.startswith(domain + " "))
        assert str(stats["docs"]) in row.split()
    assert table.splitlines()[-1].startswith("total")
    with pytest.raises(DataError, match=r"corpus\.json"):
        dc.describe_demo_corpus(corpus.parent / "nowhere")


def test_files_skip_bad_utf8_tiny_and_duplicate_documents(tmp_path: Path) -> None:
    body = "line of text\n" * 40
    (tmp_path / "a.txt").write_text(body, encoding="utf-8")
    (tmp_path / "b.txt").write_text(body, encoding="utf-8")  # duplicate of a
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe not utf-8 " * 50)
    (tmp_path / "d.txt").write_text("tiny", encoding="utf-8")
    (tmp_path / "e.txt").write_text("other text\r\n" * 60, encoding="utf-8")
    candidates = dc._files("demo", tmp_path, (".txt",))
    assert [c.source for c in candidates] == [f"demo/{n}.txt" for n in "abcde"]
    records, size = dc._fill_domain("x", candidates, 10_000, tqdm(disable=True))
    texts = sorted(r["text"] for r in records)
    assert texts == sorted([body.strip(), ("other text\n" * 60).strip()])
    assert size == sum(len(t.encode()) for t in texts)


def test_domain_cap_and_document_clipping(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i:02d}.txt").write_text(f"{i} é\n" * 3000, encoding="utf-8")
    candidates = dc._files("demo", tmp_path, (".txt",))
    records, size = dc._fill_domain("x", candidates, 40_000, tqdm(disable=True))
    assert size <= 40_000 and 40_000 - size < dc.MIN_DOC_BYTES + 10
    assert all(r["text"].endswith("é") for r in records)  # cut at a line boundary
    # Documents longer than the remaining budget but clipped to MAX_DOC_BYTES do not end the
    # domain early: 3 x 200 KB files fill a 150 KB cap as 64 KB + 64 KB + the rest.
    for i in range(3):
        (tmp_path / f"g{i}.big").write_text(f"{i} line\n" * 25_000, encoding="utf-8")
    records, size = dc._fill_domain(
        "x", dc._files("demo", tmp_path, (".big",)), 150_000, tqdm(disable=True)
    )
    assert len(records) == 3 and 150_000 - dc.MIN_DOC_BYTES < size <= 150_000
    text = "ab\n" * 10 + "é" * 100
    assert dc._clip(text, 31) == "ab\n" * 9 + "ab"
    assert dc._clip("é" * 100, 11) == "é" * 5  # no line break: whole characters only


def test_docstrings_extracted_in_source_order(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        '"""Module doc."""\n\nclass A:\n    """Class doc."""\n\n    def f(self):\n'
        '        """Method doc."""\n\nif True:\n    def g():\n        """Guarded doc."""\n',
        encoding="utf-8",
    )
    assert dc._docstrings(module) == "Module doc.\n\nClass doc.\n\nMethod doc.\n\nGuarded doc."
    (tmp_path / "bad.py").write_text("def (:\n", encoding="utf-8")
    assert dc._docstrings(tmp_path / "bad.py") is None


def test_short_domains_dropped_and_too_few_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fake(n_bytes: int) -> tuple[str, object]:
        texts = [f"{i} " + "w" * 997 for i in range(n_bytes // 1000)]  # 1000-byte documents
        docs = [dc._Candidate(f"x/{i}", partial(str, t)) for i, t in enumerate(texts)]
        return ("synthetic", lambda: docs)

    domains = {
        "big1": fake(20_000),
        "big2": fake(20_000),
        "big3": fake(20_000),
        "small": fake(2_000),
    }
    monkeypatch.setattr(dc, "_DOMAINS", domains)
    with caplog.at_level(logging.WARNING, logger="mixlab.data.demo_corpus"):
        out = dc.build_demo_corpus(tmp_path / "c", max_bytes_per_domain=10_000, progress=False)
    assert list(manifest(out)["domains"]) == ["big1", "big2", "big3"]
    assert "small" in manifest(out)["dropped"] and "small" in caplog.text
    domains.pop("big3")
    with pytest.raises(DataError, match="only 2 of 3 domains"):
        dc.build_demo_corpus(tmp_path / "d", max_bytes_per_domain=10_000, progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "c"]  # nothing half-written


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_bytes_per_domain=5"):
        dc.build_demo_corpus(tmp_path / "c", max_bytes_per_domain=5, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(DataError, match="not a demo corpus"):
        dc.build_demo_corpus(tmp_path / "mine", max_bytes_per_domain=CAP, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "precious"
