"""scripts/build_heldout_corpus.py: a second corpus from a /usr/share-like tree.

The machine's own /usr/share is not read here; the tests write a small tree with the same
layout and check the rules (caps, clipping, gzip, duplicates, symlinks, missing domains), then
prepare a store from the output through mixlab's own ingestion.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mixlab.data.prepare import prepare_from_inputs
from tests.helpers import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_heldout_corpus.py"
bhc = load_module(SCRIPT, "build_heldout_corpus")

SCALE = 0.01  # caps of 6-25 KB; a domain needs 1 KB


def write(path: Path, text: str, *, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")


def doc(name: str, i: int, size: int = 3000) -> str:
    return "\n".join(f"{name} document {i} line {k}" for k in range(size // 20))[:size] + "\n"


def fake_share(root: Path, skip: tuple[str, ...] = ()) -> None:
    files = {
        "man_cmds": "man/man1/cmd{i}.1",
        "man_api": "man/man3/api{i}.3",
        "man_intl": "man/de/man1/cmd{i}.1",
        "perl_modules": "perl/5.36.0/Mod{i}.pm",
        "cmake_modules": "cmake-3.25/Modules/Find{i}.cmake",
        "changelogs": "doc/pkg{i}/changelog.Debian.gz",
        "copyright": "doc/pkg{i}/copyright",
        "vim_help": "vim/vim90/doc/help{i}.txt",
    }
    for domain, pattern in files.items():
        if domain in skip:
            continue
        for i in range(12):
            write(root / pattern.format(i=i), doc(domain, i), gz=pattern.endswith(".gz"))


def read_docs(out: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (out / "docs.jsonl").read_text().splitlines()]


def test_builds_capped_domains_that_prepare_reads(tmp_path: Path) -> None:
    root = tmp_path / "share"
    fake_share(root)
    (root / "perl" / "5.36").symlink_to(root / "perl" / "5.36.0")  # the linked copy: not read
    write(root / "man/man1/tiny.1", "short")  # under 256 characters: skipped
    write(root / "man/man1/huge.1", "x" * 40_000 + "\n")  # clipped to 16,384 characters
    (root / "man/man8").mkdir(parents=True)
    (root / "man/man8/dup.8").write_text(doc("man_api", 0))  # a duplicate of another domain's
    write(root / "doc/bad/copyright", "")
    (root / "doc/bad/copyright").write_bytes(b"\xff\xfe" * 300)  # not UTF-8: skipped

    summary = bhc.build(root, tmp_path / "out", SCALE)
    docs = read_docs(tmp_path / "out")
    assert sorted(summary) == sorted(bhc.DOMAINS)
    for domain, (cap, _) in bhc.DOMAINS.items():
        texts = [d["text"] for d in docs if d["domain"] == domain]
        assert summary[domain] == {"docs": len(texts), "bytes": sum(len(t) for t in texts)}
        assert summary[domain]["bytes"] <= int(cap * SCALE)
    sources = [d["source"] for d in docs]
    assert not any(s.startswith("perl/5.36/") for s in sources)
    assert "man/man1/tiny.1" not in sources and "doc/bad/copyright" not in sources
    assert all(len(d["text"]) <= bhc.MAX_DOC_CHARS for d in docs)
    texts = [d["text"] for d in docs]
    assert len(texts) == len(set(texts))
    changelog = next(d for d in docs if d["domain"] == "changelogs")
    assert changelog["text"].startswith("changelogs document")  # gzip read as text
    again = tmp_path / "again"
    bhc.build(root, again, SCALE)
    assert read_docs(again) == docs  # the same order on every run

    store, _ = prepare_from_inputs(
        [tmp_path / "out" / "docs.jsonl"],
        tmp_path / "store",
        reader_options={"domain_field": "domain"},
        vocab_size=300,
        val_fraction=0.2,
        progress=False,
    )
    assert sorted(store.domains) == sorted(bhc.DOMAINS)


def test_missing_domains_left_out_or_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "share"
    fake_share(root, skip=("man_intl", "vim_help"))
    summary = bhc.build(root, tmp_path / "out", SCALE)
    assert sorted(summary) == sorted(set(bhc.DOMAINS) - {"man_intl", "vim_help"})
    assert "man_intl" in capsys.readouterr().err

    few = tmp_path / "few"
    fake_share(few, skip=tuple(bhc.DOMAINS)[:5])
    with pytest.raises(SystemExit, match="only 3 domain"):
        bhc.build(few, tmp_path / "out2", SCALE)
    assert not (tmp_path / "out2" / "docs.jsonl").exists()
