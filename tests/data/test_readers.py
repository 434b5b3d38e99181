"""Tests for mixlab.data.readers: formats, domain assignment, bad input and ingestion stats."""

from __future__ import annotations

import gzip
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mixlab.data.readers import (
    Document,
    IngestStats,
    discover_files,
    iter_documents,
    sanitize_domain,
)
from mixlab.errors import ConfigError, DataError

PILE_RECORDS = [
    {"text": "def f(): pass", "meta": {"pile_set_name": "Github"}, "url": "u1"},
    {"text": "cells divide", "meta": {"pile_set_name": "PubMed Central"}, "url": "u2"},
    {"text": "web page", "meta": {"pile_set_name": "Pile-CC"}, "url": "u3"},
]


def _jsonl_bytes(records: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _jsonl_bytes(records)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def read_all(inputs: list[Any], **options: Any) -> tuple[list[Document], IngestStats]:
    stats = IngestStats()
    docs = list(iter_documents(inputs, stats=stats, **options))
    return docs, stats


PILE = {"domain_field": "meta.pile_set_name"}


@pytest.mark.parametrize("name", ["pile.jsonl", "pile.jsonl.gz", "pile.json.gz", "pile.jsonl.zst"])
def test_jsonl_formats_domain_from_dotted_field(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, PILE_RECORDS)
    docs, stats = read_all([path], **PILE, metadata_field="url")
    assert [(d.text, d.domain, d.metadata) for d in docs] == [
        ("def f(): pass", "Github", "u1"),
        ("cells divide", "PubMed_Central", "u2"),
        ("web page", "Pile-CC", "u3"),
    ]
    assert [d.origin for d in docs] == [f"{path}:{i}" for i in (1, 2, 3)]
    assert stats.total_kept == 3 and stats.files == 1 and not stats.problems


def test_zst_with_concatenated_frames(tmp_path: Path) -> None:
    comp = zstandard.ZstdCompressor()
    data = comp.compress(_jsonl_bytes(PILE_RECORDS[:1])) + comp.compress(
        _jsonl_bytes(PILE_RECORDS[1:])
    )
    path = tmp_path / "two_frames.jsonl.zst"
    path.write_bytes(data)
    docs, _ = read_all([path], **PILE)
    assert [d.domain for d in docs] == ["Github", "PubMed_Central", "Pile-CC"]


def test_parquet_rows_nested_fields_and_batches(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 2500  # several record batches of 1024 rows
    table = pa.table(
        {
            "text": [f"doc {i}" if i != 7 else "  " for i in range(n)],
            "meta": [{"set": "A" if i % 2 else "B", "url": f"http://x/{i}"} for i in range(n)],
            "unused": list(range(n)),
        }
    )
    path = tmp_path / "part.parquet"
    pq.write_table(table, path, row_group_size=700)
    docs, stats = read_all([path], domain_field="meta.set", metadata_field="meta.url")
    assert len(docs) == n - 1
    assert docs[0] == Document("doc 0", "B", "http://x/0", f"{path}:1")
    assert docs[-1].origin == f"{path}:{n}" and docs[-1].domain == "A"
    assert stats.domains["B"].kept == n // 2 and stats.domains["B"].dropped == {}
    assert stats.domains["A"].read == n // 2 and stats.domains["A"].dropped == {"empty_text": 1}


def test_text_folder_domain_from_folder_metadata_is_relative_path(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "books").mkdir(parents=True)
    (root / "books" / "b.txt").write_text("book two")
    (root / "books" / "a.md").write_text("# book one")
    (root / "wiki" / "deep").mkdir(parents=True)
    (root / "wiki" / "deep" / "README").write_text("wiki page")
    (root / "wiki" / ".hidden.txt").write_text("hidden")
    (root / "wiki" / "image.png").write_bytes(b"\x89PNG")
    docs, _ = read_all([root], domain_from="folder")
    assert [(d.domain, d.metadata, d.text) for d in docs] == [
        ("books", "books/a.md", "# book one"),
        ("books", "books/b.txt", "book two"),
        ("deep", "wiki/deep/README", "wiki page"),
    ]


def test_explicit_file_with_unknown_extension_is_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.log"
    path.write_text("some log")
    assert discover_files([tmp_path]) == []  # skipped when found by walking a folder
    docs, _ = read_all([path], domain_from="file")
    assert [(d.domain, d.metadata, d.text) for d in docs] == [("notes", "notes.log", "some log")]


def test_domain_from_file_strips_suffixes_and_walk_is_sorted(tmp_path: Path) -> None:
    rec = [{"text": "x"}]
    write_jsonl(tmp_path / "b" / "Wikipedia (en).jsonl.zst", rec)
    write_jsonl(tmp_path / "a" / "Github.jsonl.gz", rec)
    write_jsonl(tmp_path / "a" / "ArXiv.jsonl", rec)
    files = discover_files([tmp_path])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a/ArXiv.jsonl",
        "a/Github.jsonl.gz",
        "b/Wikipedia (en).jsonl.zst",
    ]
    docs, _ = read_all([tmp_path], domain_from="file")
    assert [d.domain for d in docs] == ["ArXiv", "Github", "Wikipedia__en_"]


def test_domain_map_keeps_unknown_labels_or_drops_them_when_strict(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pile.jsonl", PILE_RECORDS)
    mapping = {"Github": "code", "PubMed Central": "science"}
    docs, _ = read_all([path], **PILE, domain_map=mapping)
    assert [d.domain for d in docs] == ["code", "science", "Pile-CC"]
    docs, stats = read_all([path], **PILE, domain_map=mapping, strict_map=True)
    assert [d.domain for d in docs] == ["code", "science"]
    assert stats.problems == {"unmapped_domain": 1}
    assert stats.expected_domains == {"code", "science"}
    stats.check_nonempty()


def test_mapped_domain_without_documents_fails_check(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pile.jsonl", PILE_RECORDS)
    _, stats = read_all([path], **PILE, domain_map={"Github": "code", "Books3": "books"})
    with pytest.raises(DataError, match="books"):
        stats.check_nonempty()
    _, stats = read_all([path], **PILE)
    stats.check_nonempty(["Github", "PubMed Central"])  # names are sanitized before lookup
    with pytest.raises(DataError, match="FreeLaw"):
        stats.check_nonempty(["Github", "FreeLaw"])


def test_malformed_lines_skipped_with_line_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bad.jsonl"
    lines = [
        json.dumps(PILE_RECORDS[0]),
        "{not json",
        "",  # blank lines are ignored, but still numbered
        "[1, 2]",
        json.dumps({"meta": {"pile_set_name": "Github"}}),
        json.dumps({"text": 5, "meta": {"pile_set_name": "Github"}}),
        json.dumps({"text": "no domain"}),
        json.dumps({"text": "   \n", "meta": {"pile_set_name": "Github"}}),
        json.dumps(PILE_RECORDS[2]),
    ]
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="mixlab.data.readers"):
        docs, stats = read_all([path], **PILE)
    assert [d.origin for d in docs] == [f"{path}:1", f"{path}:9"]
    assert stats.problems == {"malformed_json": 2, "missing_text": 2, "missing_domain": 1}
    assert stats.domains["Github"].read == 2
    assert stats.domains["Github"].dropped == {"empty_text": 1}
    assert stats.examples[0].startswith(f"{path}:2: malformed_json")
    assert f"{path}:4: malformed_json" in stats.examples[1]
    assert [e.split(": ")[0] for e in stats.examples] == [f"{path}:{i}" for i in (2, 4, 5, 6, 7)]
    assert f"{path}:2" in caplog.text and f"{path}:7" in caplog.text


def test_only_first_20_problems_logged_individually(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_text("{oops\n" * 60 + json.dumps({"text": "ok", "d": "x"}) + "\n")
    with caplog.at_level(logging.WARNING, logger="mixlab.data.readers"):
        docs, stats = read_all([path], domain_field="d")
    assert len(docs) == 1 and stats.problems == {"malformed_json": 60}
    assert len(stats.examples) == 50
    assert len(caplog.records) == 21  # 20 individual warnings + one "counting silently"
    assert f"{path}:20:" in caplog.text and f"{path}:21:" not in caplog.text


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{broken", "malformed_json"),
        ('{"d": "x"}', "missing_text"),
        ('{"text": "t"}', "missing_domain"),
    ],
)
def test_on_error_fail_names_file_and_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "fine", "d": "x"}\n' + line.encode() + b"\n"))
    docs = iter_documents([path], domain_field="d", on_error="fail")
    assert next(docs).text == "fine"
    with pytest.raises(DataError, match=rf"x\.jsonl\.gz:2: {reason}.*--on-error skip"):
        next(docs)


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(
        b'{"text": "caf\xe9 ok", "d": "web"}\n' + b'{"text": "\xff\xfe", "d": "web"}\n'
    )
    text_file = tmp_path / "t" / "raw.txt"
    text_file.parent.mkdir()
    text_file.write_bytes(b"bad \x80 byte")
    docs, stats = read_all([path], domain_field="d", on_error="fail")
    assert [d.text for d in docs] == ["caf\ufffd ok", "\ufffd\ufffd"]
    # kept, but counted (not "0 problems"), per reason and per file
    assert stats.problems == {"invalid_utf8": 2} and stats.total_kept == 2
    assert stats.per_file == {str(path): {"invalid_utf8": 2}}
    assert stats.examples[0] == f"{path}:1: invalid_utf8: invalid UTF-8 replaced by U+FFFD"
    docs, stats = read_all([text_file], domain_from="folder")
    assert docs[0].text == "bad \ufffd byte" and docs[0].domain == "t"
    assert stats.per_file == {str(text_file): {"invalid_utf8": 1}}


def test_lone_surrogate_escape_is_replaced_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        '{"text": "a \\ud800 b", "d": "x", "m": "\\udfff"}\n{"text": "fine", "d": "x"}\n'
    )
    docs, stats = read_all([path], domain_field="d", metadata_field="m")
    assert [(d.text, d.metadata) for d in docs] == [("a \ufffd b", "\ufffd"), ("fine", "")]
    assert all(d.text.encode("utf-8") for d in docs)  # encodable: prepare would crash before
    assert stats.problems == {"invalid_utf8": 1}


def test_empty_files_are_counted_per_file_and_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"text": "a", "d": "x"}, {"text": " ", "d": "x"}])
    (tmp_path / "b.jsonl").write_bytes(b"")
    (tmp_path / "c.jsonl").write_text("\n\n")
    write_jsonl(tmp_path / "d.jsonl.gz", [])
    (tmp_path / "e.txt").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="mixlab.data.readers"):
        docs, stats = read_all([tmp_path], domain_field="d")
    assert len(docs) == 1 and stats.files == 5
    assert stats.problems == {"empty_file": 3, "missing_domain": 1}  # e.txt: no field
    assert stats.per_file == {
        str(tmp_path / "a.jsonl"): {"empty_text": 1},
        str(tmp_path / "b.jsonl"): {"empty_file": 1},
        str(tmp_path / "c.jsonl"): {"empty_file": 1},
        str(tmp_path / "d.jsonl.gz"): {"empty_file": 1},
        str(tmp_path / "e.txt"): {"missing_domain": 1},
    }
    assert f"{tmp_path / 'b.jsonl'}: empty_file: no records (nothing read)" in caplog.text
    docs, stats = read_all([tmp_path / "e.txt"], domain_from="file")
    assert docs == [] and stats.problems == {"empty_file": 1} and stats.total_read == 0
    table = read_all([tmp_path], domain_field="d")[1].format_table()
    assert "problems: empty_file=3, missing_domain=1" in table
    assert f"  {tmp_path / 'b.jsonl'}: empty_file=1" in table


def test_bad_files_are_counted_or_raise(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "a", "d": "x"}])
    (tmp_path / "broken.jsonl.gz").write_bytes(b"this is not gzip")
    (tmp_path / "broken.jsonl.zst").write_bytes(b"this is not zstd")
    (tmp_path / "broken.parquet").write_bytes(b"this is not parquet")
    docs, stats = read_all([tmp_path], domain_field="d")
    assert [d.origin for d in docs] == [f"{good}:1"]
    assert stats.problems == {"bad_file": 3} and stats.files == 4
    with pytest.raises(DataError, match=r"broken\.jsonl\.gz: bad_file"):
        list(iter_documents([tmp_path], domain_field="d", on_error="fail"))


def test_text_file_with_domain_from_field_is_missing_domain(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    docs, stats = read_all([tmp_path], domain_field="d")
    assert docs == [] and stats.problems == {"missing_domain": 1}
    with pytest.raises(DataError, match="no documents were kept"):
        stats.check_nonempty()


def test_hf_save_to_disk_dataset_and_dataset_dict(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    data = {"text": ["alpha", "beta", ""], "source": ["s1", "s2", "s3"]}
    root = tmp_path / "hf"
    datasets.Dataset.from_dict(data).save_to_disk(str(root / "news"))
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(data), "extra": datasets.Dataset.from_dict(data)}
    ).save_to_disk(str(root / "blogs"))
    assert [p.name for p in discover_files([root])] == ["blogs", "news"]
    docs, stats = read_all([root], domain_from="file", metadata_field="source")
    assert [(d.domain, d.text, d.metadata) for d in docs] == [
        ("blogs", "alpha", "s1"),
        ("blogs", "beta", "s2"),
        ("blogs", "alpha", "s1"),
        ("blogs", "beta", "s2"),
        ("news", "alpha", "s1"),
        ("news", "beta", "s2"),
    ]
    assert docs[0].origin == f"{root / 'blogs'}[extra]:1"
    assert docs[-1].origin == f"{root / 'news'}:2"
    assert stats.domains["blogs"].dropped == {"empty_text": 2}


def test_hf_dataset_without_datasets_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "state.json").write_text("{}")
    (folder / "dataset_info.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"pip install 'mixlab\[hf\]'"):
        list(iter_documents([tmp_path], domain_from="file", on_error="skip"))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"domain_from": "field"}, "domain_field"),
        ({"domain_from": "path"}, "domain_from"),
        ({"domain_from": "file", "on_error": "ignore"}, "on_error"),
        ({"domain_from": "file", "strict_map": True}, "domain_map"),
        ({"domain_from": "file", "domain_map": {"a": "  "}}, "domain_map"),
    ],
)
def test_invalid_options_raise_config_error_up_front(
    tmp_path: Path, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        iter_documents([tmp_path], **options)  # no next(): validation is eager


def test_nonexistent_input_raises_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(ConfigError, match=r"nope\.jsonl"):
        iter_documents([missing], domain_from="file")


def test_empty_input_fails_check_nonempty(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "empty.jsonl", [{"text": " ", "d": "x"}])
    docs, stats = read_all([tmp_path], domain_field="d")
    assert docs == [] and stats.domains["x"].dropped == {"empty_text": 1}
    with pytest.raises(DataError, match="no documents were kept"):
        stats.check_nonempty()
    with pytest.raises(DataError, match=rf"read from {tmp_path}.*empty\.jsonl: empty_text=1"):
        stats.check_any_kept([tmp_path])


def test_stats_table_dict_and_save(tmp_path: Path) -> None:
    path = tmp_path / "mix.jsonl"
    path.write_text(
        "\n".join(
            [json.dumps({"text": "a", "d": "code"})] * 3
            + [json.dumps({"text": "", "d": "code"}), json.dumps({"text": "b", "d": "web"})]
            + ["{bad"]
        )
    )
    _, stats = read_all([path], domain_field="d")
    table = stats.format_table()
    rows = {line.split()[0]: line.split() for line in table.splitlines()}
    assert rows["domain"] == ["domain", "read", "kept", "dropped:empty_text"]
    assert rows["code"] == ["code", "4", "3", "1"]
    assert rows["web"] == ["web", "1", "1", "0"]
    assert rows["total"] == ["total", "5", "4", "1"]
    assert "malformed_json=1" in table
    out = tmp_path / "stats.json"
    stats.save(out)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(stats.to_dict()))
    assert saved["domains"]["code"] == {"read": 4, "kept": 3, "dropped": {"empty_text": 1}}
    assert saved["totals"] == {"read": 5, "kept": 4, "dropped": 1, "problems": 1}


def test_sanitize_domain() -> None:
    assert sanitize_domain("Pile-CC") == "Pile-CC"
    assert sanitize_domain("PubMed Central") == "PubMed_Central"
    assert sanitize_domain("a/b\\c:d") == "a_b_c_d"
    assert sanitize_domain("..") == "_."
    assert sanitize_domain("DM Mathematics ") == "DM_Mathematics"
