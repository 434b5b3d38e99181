"""The demo corpus: shipped with the package, unpacked byte-identically on every machine."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import zstandard

from mixlab.data import demo_corpus as dc
from mixlab.errors import DataError

# Changing the shipped corpus changes every demo number in README.md: re-measure them and
# update this pin in the same commit.
SHIPPED_FINGERPRINT = "17252336c7bf101fda5034ef2375c80c94d4442510b9aeed2af6f477c812d67c"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dc.build_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus")


def read_domain(corpus: Path, domain: str) -> list[dict]:
    with open(corpus / f"{domain}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def manifest(corpus: Path) -> dict:
    return json.loads((corpus / dc.MANIFEST_NAME).read_text(encoding="utf-8"))


def test_unpacked_files_match_the_shipped_manifest_and_fingerprint(corpus: Path) -> None:
    info = manifest(corpus)
    assert info == dc.shipped_manifest()
    assert info["format_version"] == dc.CORPUS_FORMAT_VERSION
    assert info["fingerprint"] == SHIPPED_FINGERPRINT
    assert tuple(info["domains"]) == dc.DEMO_DOMAINS
    assert dc.demo_corpus_files(corpus) == [corpus / f"{d}.jsonl" for d in dc.DEMO_DOMAINS]
    assert sorted(p.name for p in corpus.iterdir()) == sorted(
        [dc.MANIFEST_NAME] + [f"{d}.jsonl" for d in dc.DEMO_DOMAINS]
    )
    fingerprint = hashlib.sha256()  # the formula of the module docstring, written out again
    for domain in dc.DEMO_DOMAINS:
        data = (corpus / f"{domain}.jsonl").read_bytes()
        fingerprint.update(domain.encode() + b"\0" + data)
        stats = info["domains"][domain]
        assert stats["sha256"] == hashlib.sha256(data).hexdigest()
        assert stats["file_bytes"] == len(data)
        records = read_domain(corpus, domain)
        assert len(records) == stats["docs"] > 0
        text_bytes = sum(len(r["text"].encode("utf-8")) for r in records)
        assert text_bytes == stats["bytes"]
        assert 400_000 <= text_bytes <= info["max_bytes_per_domain"]
        for r in records:
            assert set(r) == {"text", "domain", "source"}
            assert r["domain"] == domain
            assert r["text"].strip() and len(r["text"].encode("utf-8")) <= info["max_doc_bytes"]
            src = r["source"]
            assert src.split("/")[0] in {"stdlib", "include", "site-packages", "license"}
            assert not src.startswith("/") and "\\" not in src and ".." not in src
        assert len({r["source"] for r in records}) == len(records)
        assert len({r["text"] for r in records}) == len(records)  # exact duplicates removed
    assert fingerprint.hexdigest() == info["fingerprint"]


def test_every_document_is_attributed_to_a_distribution() -> None:
    attribution = (dc._shipped_dir() / "ATTRIBUTION.md").read_text(encoding="utf-8")
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in attribution.splitlines()
        if line.startswith("|") and not line.startswith(("| distribution", "|---"))
    ]
    per_domain: Counter[str] = Counter()
    for _name, version, license_, docs in rows:  # "python_code 150, python_tests 46"
        assert version and license_
        for cell in docs.split(", "):
            domain, count = cell.split()
            per_domain[domain] += int(count)
    shipped = dc.shipped_manifest()["domains"]
    assert per_domain == {d: info["docs"] for d, info in shipped.items()}
    assert any(row[0] == "CPython" for row in rows)  # stdlib, headers, pydoc topics


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
    again = dc.build_demo_corpus(tmp_path / "again")
    names = sorted(p.name for p in corpus.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (corpus / name).read_bytes() == (again / name).read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left over


def test_cache_is_reused_until_damaged_or_rebuild(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture = corpus
    corpus = Path(shutil.copytree(fixture, tmp_path / "copy"))  # the fixture stays untouched
    before = {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()}
    calls: list[Path] = []
    real_unpack = dc._unpack

    def counting_unpack(tmp: Path, shipped: dict) -> None:
        calls.append(tmp)
        real_unpack(tmp, shipped)

    monkeypatch.setattr(dc, "_unpack", counting_unpack)
    assert dc.build_demo_corpus(corpus) == corpus
    assert len(calls) == 0
    assert {p.name: p.stat().st_mtime_ns for p in corpus.iterdir()} == before
    # A file changed in place (same size) is not the shipped corpus: it is unpacked again.
    victim = corpus / f"{dc.DEMO_DOMAINS[0]}.jsonl"
    data = bytearray(victim.read_bytes())
    data[100] ^= 1
    victim.write_bytes(bytes(data))
    dc.build_demo_corpus(corpus)
    assert len(calls) == 1
    victim.write_bytes(victim.read_bytes()[:-10])  # truncated
    dc.build_demo_corpus(corpus)
    assert len(calls) == 2
    stale = manifest(corpus)
    stale["format_version"] = 1  # a corpus of an older mixlab
    (corpus / dc.MANIFEST_NAME).write_text(json.dumps(stale), encoding="utf-8")
    dc.build_demo_corpus(corpus)
    assert len(calls) == 3
    dc.build_demo_corpus(corpus, rebuild=True)
    assert len(calls) == 4
    assert manifest(corpus) == dc.shipped_manifest()
    assert victim.read_bytes() == (fixture / victim.name).read_bytes()


def test_damaged_shipped_data_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = Path(shutil.copytree(Path(str(dc._shipped_dir())), tmp_path / "shipped"))
    monkeypatch.setattr(dc, "_shipped_dir", lambda: shipped)
    packed = shipped / "licenses.jsonl.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "other"}\n'))
    with pytest.raises(DataError, match=r"licenses\.jsonl\.zst does not match the sha256"):
        dc.build_demo_corpus(tmp_path / "out")
    packed.write_bytes(b"not zstd")
    with pytest.raises(DataError, match=r"cannot read .*licenses\.jsonl\.zst"):
        dc.build_demo_corpus(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shipped"]  # nothing half-written
    (shipped / dc.SHIPPED_MANIFEST_NAME).unlink()
    with pytest.raises(DataError, match=r"manifest\.json is missing.*reinstall mixlab"):
        dc.build_demo_corpus(tmp_path / "out")


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


def test_describe_lists_every_domain_and_the_fingerprint(corpus: Path) -> None:
    table = dc.describe_demo_corpus(corpus)
    for domain, stats in manifest(corpus)["domains"].items():
        row = next(line for line in table.splitlines() if line.startswith(domain + " "))
        assert str(stats["docs"]) in row.split()
    assert table.splitlines()[-2].startswith("total")
    assert table.splitlines()[-1] == f"demo corpus fingerprint {SHIPPED_FINGERPRINT}"
    with pytest.raises(DataError, match=r"corpus\.json"):
        dc.describe_demo_corpus(corpus.parent / "nowhere")


def test_a_folder_of_other_files_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(DataError, match="not a demo corpus"):
        dc.build_demo_corpus(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "precious"
